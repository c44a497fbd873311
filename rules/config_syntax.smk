"""Name the file, line and column of a YAML syntax error in the workflow's config file.

Snakemake's own message ("Config file is not valid JSON or YAML") names neither. A file given with
--configfile is read by Snakemake's command line before this workflow is parsed: see the README.
"""

import yaml
from snakemake.exceptions import WorkflowError


def check_yaml_syntax(path):
    """Raise WorkflowError naming ``path`` and the line and column of its first YAML syntax error.

    Only the syntax is checked (nodes are composed, not constructed); a missing file is left to
    the ``configfile:`` directive, which names it.
    """
    try:
        with open(path, encoding="utf-8") as f:
            yaml.compose(f, Loader=yaml.SafeLoader)
    except FileNotFoundError:
        return
    except UnicodeDecodeError as err:
        raise WorkflowError(f"{path}: not UTF-8 text ({err})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        context = getattr(err, "context", None)
        start = getattr(err, "context_mark", None)
        if context and start:
            problem += f" ({context} at line {start.line + 1})"
        raise WorkflowError(f"{path}{where}: not valid YAML: {problem}") from None


check_yaml_syntax("config/config.yaml")
