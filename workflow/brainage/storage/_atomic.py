"""Atomic writes (temporary file in the same folder, then rename) and small JSON/TSV files."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from brainage.errors import InputDataError

# What to do about a results file that cannot be read: Snakemake rebuilds a missing output
# (an existing one, however broken, looks up to date to it).
REBUILD_HINT = "delete it and rerun snakemake to rebuild it"
# Readers of JSON and TSV also read user inputs (participants.tsv, confounds): hint conditionally.
_IF_OURS = f"if the workflow wrote it, {REBUILD_HINT}"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    A reader never sees a half-written file: either the old file (or none) or the
    complete new one. On an exception the temporary file is removed.

    Examples
    --------
    >>> with atomic_path("out.parquet") as tmp:  # doctest: +SKIP
    ...     table.to_parquet(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Keep the real name (and so its suffixes, e.g. .nii.gz) at the end: writers such as
    # nibabel choose the format and compression from the extension.
    fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix=f"-{path.name}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates the file 0600; give the output the permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, obj: object) -> None:
    """Write ``obj`` as indented, key-sorted JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> dict:
    """Read a JSON file written by :func:`write_json`.

    Raises
    ------
    InputDataError
        If the file does not exist, cannot be read, is empty, is not UTF-8 text or not valid
        JSON (truncated or corrupt). The message starts with the path.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise InputDataError(f"{path}: file not found") from err
    except (OSError, UnicodeDecodeError) as err:
        raise InputDataError(f"{path}: not a readable JSON file ({err}); {_IF_OURS}") from err
    if not text.strip():
        raise InputDataError(f"{path}: empty file, expected JSON; {_IF_OURS}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise InputDataError(f"{path}: not valid JSON (truncated or corrupt: {err}); {_IF_OURS}") from err


def write_tsv(path: str | os.PathLike, df: pd.DataFrame) -> None:
    """Write a table as tab-separated text (missing values as ``n/a``, BIDS style), atomically."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False, na_rep="n/a")


def read_tsv(path: str | os.PathLike, dtype: object = None) -> pd.DataFrame:
    """Read a BIDS-style TSV: ``n/a`` and empty cells are missing, nothing else is.

    Parameters
    ----------
    dtype : type or dict, optional
        Passed to pandas (``str`` keeps every column as text).

    Raises
    ------
    InputDataError
        If the file does not exist, is empty (no header), has a row with more fields than the
        header, or is not UTF-8 text.
    """
    path = Path(path)
    if not path.is_file():
        raise InputDataError(f"{path}: file not found")
    try:
        return pd.read_csv(path, sep="\t", dtype=dtype, keep_default_na=False, na_values=["n/a", ""])
    except pd.errors.EmptyDataError as err:
        raise InputDataError(f"{path}: empty file, expected a header row; {_IF_OURS}") from err
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as err:
        # A row with more fields than the header, bytes that are not text, an unreadable file.
        reason = " ".join(str(err).split())
        raise InputDataError(f"{path}: not a readable tab-separated table ({reason}); {_IF_OURS}") from err


def require_columns(df: pd.DataFrame, path: str | os.PathLike, columns, what: str = "table") -> None:
    """Raise ``InputDataError`` naming ``path``, ``what`` it holds and the ``columns`` it lacks."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputDataError(
            f"{path}: {what} lacks columns {missing} (expected {list(columns)}, found {list(map(str, df.columns))})"
        )


def _json_default(obj: object) -> object:
    # numpy scalars and paths appear in QC records and cards; store them as plain values.
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"cannot store {type(obj).__name__} in JSON")
