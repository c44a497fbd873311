"""Exceptions that carry a clear, user-facing reason."""


class InputDataError(ValueError):
    """Bad input data: the message names the file and what was wrong with it.

    Stages catch it per subject, record the subject as excluded (subject, stage, reason)
    and let every other subject finish.
    """


class ConfigError(ValueError):
    """A parameter value that the schema cannot express a constraint for."""


class DownloadError(RuntimeError):
    """A remote store could not be used at all (unreachable endpoint, retries exhausted).

    A single subject's missing or forbidden file is not a ``DownloadError``: that subject is
    recorded as excluded and the others continue.
    """


class PreprocessError(RuntimeError):
    """fMRIPrep cannot run (no license, engine or image) or a job left no usable derivatives.

    The message says what is missing, where to look (fMRIPrep's log tail, crash files) and
    what to change.
    """
