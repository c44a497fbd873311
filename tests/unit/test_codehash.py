"""Code hashes follow the import graph: a change to any module a stage imports reruns it."""

import ast
import os
import re

import pytest

from brainage import _codehash
from brainage._codehash import code_hash, module_files

# A package with a known import graph: each entry is (file, source).
TREE = {
    "brainage/__init__.py": "",
    "brainage/errors.py": "",
    "brainage/a/__init__.py": "from brainage.a.core import run\n",
    "brainage/a/__main__.py": "from brainage.a import core\nfrom brainage import errors\n",
    # relative import; a function-level import; a cycle (helper imports core back)
    "brainage/a/core.py": "from . import helper\n\ndef run():\n    import brainage.b\n",
    "brainage/a/helper.py": "from brainage.a.core import run\nfrom ..c.registry import NAMES\n",
    # a lazy re-export through __getattr__
    "brainage/b/__init__.py": "def __getattr__(name):\n    from brainage.b.lazy import Thing\n    return Thing\n",
    "brainage/b/lazy.py": "Thing = 1\n",
    # a registry of module names for importlib.import_module
    "brainage/c/__init__.py": "",
    "brainage/c/registry.py": "NAMES = {'p': ('brainage.c.plugin', 'Plugin')}\n",
    "brainage/c/plugin.py": "import numpy\n",
    # reached by nothing from brainage.a.__main__
    "brainage/d/__init__.py": "",
    "brainage/d/__main__.py": "from brainage.d import alone\n",
    "brainage/d/alone.py": "import os\n",
}


@pytest.fixture
def tree(tmp_path):
    for name, source in TREE.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return tmp_path


def _relative(paths, root):
    return {p.relative_to(root).as_posix() for p in paths}


def test_module_files_follow_every_kind_of_import_once(tree):
    files = _relative(module_files("brainage.a.__main__", root=tree), tree)
    assert files == {
        "brainage/__init__.py", "brainage/errors.py", "brainage/a/__init__.py", "brainage/a/__main__.py",
        "brainage/a/core.py", "brainage/a/helper.py", "brainage/b/__init__.py", "brainage/b/lazy.py",
        "brainage/c/__init__.py", "brainage/c/registry.py", "brainage/c/plugin.py",
    }


def test_module_files_of_several_entries_are_the_union(tree):
    files = _relative(module_files("brainage.d.__main__", "brainage.b", root=tree), tree)
    assert files == {"brainage/__init__.py", "brainage/d/__init__.py", "brainage/d/__main__.py",
                     "brainage/d/alone.py", "brainage/b/__init__.py", "brainage/b/lazy.py"}


def test_hash_changes_with_a_file_reached_through_another_package_only(tree):
    before_a, before_d = code_hash("brainage.a.__main__", root=tree), code_hash("brainage.d.__main__", root=tree)
    plugin = tree / "brainage/c/plugin.py"
    plugin.write_text(plugin.read_text() + "# a change\n")
    assert code_hash("brainage.a.__main__", root=tree) != before_a
    assert code_hash("brainage.d.__main__", root=tree) == before_d


def test_hash_follows_a_new_import(tree):
    before = code_hash("brainage.d.__main__", root=tree)
    alone = tree / "brainage/d/alone.py"
    alone.write_text("from brainage.c import plugin\n")
    assert "brainage/c/plugin.py" in _relative(module_files("brainage.d.__main__", root=tree), tree)
    assert code_hash("brainage.d.__main__", root=tree) != before


def test_hash_is_the_same_for_the_same_files_elsewhere(tree, tmp_path_factory):
    other = tmp_path_factory.mktemp("copy")
    for name in TREE:
        (other / name).parent.mkdir(parents=True, exist_ok=True)
        (other / name).write_bytes((tree / name).read_bytes())
    assert code_hash("brainage.a.__main__", root=other) == code_hash("brainage.a.__main__", root=tree)


def test_unknown_entry_is_named(tree):
    with pytest.raises(ValueError, match=r"entry 'brainage.nope.__main__' is no module"):
        code_hash("brainage.nope.__main__", root=tree)
    with pytest.raises(ValueError, match=r"entry 'numpy' is no module"):
        module_files("numpy", root=tree)


def _stage_files(stage):
    return _relative(module_files(f"brainage.{stage}.__main__"), _codehash.ROOT)


def test_real_stages_reach_the_modules_they_import():
    extract = _stage_files("extract")
    # extract computes the motion QC with preprocess.qc: a change there makes stale QC records
    assert "brainage/preprocess/qc.py" in extract
    assert "brainage/preprocess/qc.py" not in _stage_files("train")
    assert "brainage/preprocess/qc.py" not in _stage_files("evaluate")
    train = _stage_files("train")
    # the shared torch loop (moved out of brainage.train) and the registry's lazily imported models
    assert {"brainage/torchloop/loop.py", "brainage/models/cnn_rnn.py", "brainage/models/baselines.py",
            "brainage/storage/__init__.py", "brainage/__init__.py", "brainage/train/__init__.py"} <= train
    assert not any(f.startswith("brainage/report/") for f in train)


def test_default_root_is_the_imported_package():
    assert _codehash.ROOT == _codehash.Path(_codehash.__file__).resolve().parent.parent
    assert code_hash("brainage.train.__main__") == code_hash("brainage.train.__main__", root=os.fspath(_codehash.ROOT))


def _reference_files(entry, root):
    # An independent closure: whole files parsed, every import and module-name string constant.
    def resolve(name):
        base = root.joinpath(*name.split("."))
        return next((p for p in (base / "__init__.py", base.with_name(base.name + ".py")) if p.is_file()), None)

    seen, todo = {}, [entry]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for module in (".".join(parts[: i + 1]) for i in range(len(parts))):
            path = resolve(module)
            if path is None or module in seen:
                continue
            seen[module] = path
            package = module if path.name == "__init__.py" else module.rpartition(".")[0]
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    todo += [a.name for a in node.names if a.name.startswith("brainage")]
                elif isinstance(node, ast.ImportFrom):
                    base = node.module or ""
                    if node.level:
                        anchor = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                        base = f"{anchor}.{base}" if base else anchor
                    if base.startswith("brainage"):
                        todo += [base] + [f"{base}.{a.name}" for a in node.names]
                elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                    if re.fullmatch(r"brainage(\.\w+)+", node.value):
                        todo.append(node.value)
    return {p.relative_to(root).as_posix() for p in seen.values()}


@pytest.mark.parametrize("stage", ["demo", "download", "participants", "preprocess", "extract", "dataset", "pretrain",
                                   "train", "evaluate", "report"])
def test_real_stage_files_equal_a_whole_file_parse(stage):
    # module_files parses only the import statements (fast): it may count an import line of a
    # docstring too, but must never miss a module.
    entry = f"brainage.{stage}.__main__"
    assert _reference_files(entry, _codehash.ROOT) <= _stage_files(stage)


def _package_of(path, root):
    """The stage package (or top-level module) a file belongs to: brainage/<name>/... -> <name>."""
    return path.relative_to(root / "brainage").parts[0].removesuffix(".py")


def test_stage_packages_import_each_other_without_cycles():
    # The torch loop and its data once lived in train/, which models imported while train
    # imported models: a cycle that made either package impossible to read alone. Every
    # package's imports (lazy ones and registry strings included) must form a DAG.
    root = _codehash.ROOT
    packages = sorted(p.name for p in (root / "brainage").iterdir()
                      if p.is_dir() and (p / "__init__.py").exists())
    reaches = {}
    for name in packages:
        files = module_files(*(f"brainage.{name}.{p.stem}" if p.stem != "__init__" else f"brainage.{name}"
                               for p in (root / "brainage" / name).glob("*.py")))
        reaches[name] = {_package_of(f, root) for f in files} - {name}
    cycles = sorted((a, b) for a in packages for b in reaches[a] if b in reaches and a in reaches[b])
    assert cycles == []
    assert "train" not in reaches["models"] and "models" in reaches["train"]
    assert "torchloop" in reaches["models"] and "torchloop" in reaches["train"]
