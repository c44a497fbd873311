"""Parquet formats: ROI time series, masked downsampled volumes, and plain tables.

Layouts (``SCHEMA_VERSION`` 1)
-------------------------------
timeseries
    one row per time point: ``t`` (int32, index into the kept frames' original volume
    numbers is in metadata ``frames``), then one float32 column per region, named by the
    atlas label (``roi_001`` ...).
volumes
    one row per time point: ``t`` (int32) and ``frame`` (fixed-size list of float16, the
    in-mask voxels in C order of the ``(x, y, z)`` grid). The boolean mask, its shape and
    the affine are stored once, in the file metadata. zstd-compressed.
table
    any pandas DataFrame (cohort, predictions), with the same provenance metadata.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from brainage._version import source_version
from brainage.errors import InputDataError
from brainage.storage._atomic import REBUILD_HINT, atomic_path

SCHEMA_VERSION = "1"
_META_KEY = b"brainage"
_COMPRESSION = "zstd"


@dataclass
class TimeSeries:
    """One subject's denoised ROI series.

    Attributes
    ----------
    participant_id : str
    data : ndarray, shape (n_timepoints, n_regions), float32
    labels : list of str, length n_regions
    metadata : dict
        Provenance record (``kind``, ``schema_version``, ``params``, ``sources``, ...).
    """

    participant_id: str
    data: np.ndarray
    labels: list[str]
    metadata: dict = field(default_factory=dict)


@dataclass
class Volumes:
    """One subject's masked, downsampled frames.

    Attributes
    ----------
    participant_id : str
    data : ndarray, shape (n_timepoints, n_voxels), float16
        In-mask voxels, C order of the grid.
    mask : ndarray, shape (x, y, z), bool
    affine : ndarray, shape (4, 4), float64
    metadata : dict
    """

    participant_id: str
    data: np.ndarray
    mask: np.ndarray
    affine: np.ndarray
    metadata: dict = field(default_factory=dict)

    def to_grid(self, dtype: np.dtype = np.float32) -> np.ndarray:
        """Return the frames on the full grid, zeros outside the mask.

        Returns
        -------
        ndarray, shape (n_timepoints, x, y, z)
        """
        out = np.zeros((self.data.shape[0], *self.mask.shape), dtype=dtype)
        out[:, self.mask] = self.data
        return out


def _provenance(kind: str, participant_id: str | None, provenance: dict | None) -> dict:
    record = {
        "kind": kind,
        "schema_version": SCHEMA_VERSION,
        "package_version": source_version(),
        "participant_id": participant_id,
    }
    record.update(provenance or {})
    return record


def _write(path: str | os.PathLike, table: pa.Table, record: dict, encodings: dict | None = None) -> None:
    """Write ``table`` atomically with ``record`` in its metadata; ``encodings``: Parquet leaf path -> encoding.

    A column given an encoding gets no dictionary (Parquet allows one or the other).
    """
    meta = dict(table.schema.metadata or {})
    meta[_META_KEY] = json.dumps(record, sort_keys=True, default=str).encode()
    table = table.replace_schema_metadata(meta)
    options = {}
    if encodings:
        encoded = {leaf.split(".")[0] for leaf in encodings}
        options = {"column_encoding": encodings,
                   "use_dictionary": [name for name in table.column_names if name not in encoded]}
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression=_COMPRESSION, **options)


@contextlib.contextmanager
def _reading(path: str | os.PathLike) -> Iterator[None]:
    """Turn what pyarrow raises on a missing, empty, truncated or corrupt file into ``InputDataError``.

    pyarrow's own messages ("Parquet magic bytes not found in footer") name no file; ours
    start with the path, say what was wrong and how to get a good file back.
    """
    try:
        yield
    except FileNotFoundError as err:
        raise InputDataError(f"{path}: file not found (rerun snakemake to rebuild it)") from err
    except (pa.ArrowException, OSError) as err:
        # ArrowInvalid (no footer magic, size 0), ArrowIOError / OSError (undecodable footer or pages).
        reason = " ".join(str(err).split()) or type(err).__name__
        raise InputDataError(
            f"{path}: not a readable Parquet file (truncated or corrupt: {reason}); {REBUILD_HINT}"
        ) from err


def _malformed(path: str | os.PathLike, what: str, err: Exception) -> InputDataError:
    return InputDataError(f"{path}: malformed {what} ({type(err).__name__}: {err}); {REBUILD_HINT}")


def read_metadata(path: str | os.PathLike) -> dict:
    """Return the provenance record of a brainage Parquet file.

    Raises
    ------
    InputDataError
        If the file is missing, empty, truncated or corrupt, was not written by brainage, has
        another schema version or unreadable metadata. The message starts with the path.
    """
    with _reading(path):
        meta = pq.read_schema(path).metadata or {}
    if _META_KEY not in meta:
        raise InputDataError(f"{path}: not a brainage Parquet file (no '{_META_KEY.decode()}' metadata)")
    try:
        record = json.loads(meta[_META_KEY])
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise _malformed(path, f"'{_META_KEY.decode()}' metadata", err) from err
    if not isinstance(record, dict):
        raise InputDataError(f"{path}: '{_META_KEY.decode()}' metadata is not a JSON object; {REBUILD_HINT}")
    if record.get("schema_version") != SCHEMA_VERSION:
        raise InputDataError(
            f"{path}: schema version {record.get('schema_version')!r}, this brainage reads "
            f"{SCHEMA_VERSION!r}; rerun the stage that wrote it"
        )
    return record


def _check_kind(path: str | os.PathLike, record: dict, kind: str) -> None:
    if record.get("kind") != kind:
        raise InputDataError(f"{path}: holds {record.get('kind')!r}, expected {kind!r}")


def write_timeseries(
    path: str | os.PathLike,
    data: np.ndarray,
    labels: list[str],
    *,
    participant_id: str,
    provenance: dict | None = None,
) -> None:
    """Write one subject's ROI series (float32), atomically.

    Parameters
    ----------
    data : ndarray, shape (n_timepoints, n_regions)
        May have zero rows (an excluded subject keeps a well-formed, empty file).
    labels : list of str, length n_regions
    provenance : dict, optional
        Extra metadata (parameters, source files, QC); stored as JSON.
    """
    data = np.asarray(data, dtype=np.float32)
    if data.ndim != 2 or data.shape[1] != len(labels):
        raise ValueError(f"data shape {data.shape} does not match {len(labels)} labels")
    columns = {"t": pa.array(np.arange(data.shape[0], dtype=np.int32))}
    for j, label in enumerate(labels):
        columns[str(label)] = pa.array(data[:, j])
    record = _provenance("timeseries", participant_id, provenance)
    record["labels"] = [str(x) for x in labels]
    _write(path, pa.table(columns), record)


def read_timeseries(path: str | os.PathLike) -> TimeSeries:
    """Read a file written by :func:`write_timeseries`."""
    record = read_metadata(path)
    _check_kind(path, record, "timeseries")
    labels = record.get("labels")
    if not isinstance(labels, list):
        raise InputDataError(f"{path}: time-series metadata has no list of region labels; {REBUILD_HINT}")
    with _reading(path):
        table = pq.read_table(path, columns=labels)
    if labels:
        data = np.column_stack([table.column(c).to_numpy() for c in labels]).astype(np.float32)
    else:
        data = np.zeros((table.num_rows, 0), dtype=np.float32)
    return TimeSeries(record["participant_id"], data.reshape(table.num_rows, len(labels)), labels, record)


def write_volumes(
    path: str | os.PathLike,
    data: np.ndarray,
    mask: np.ndarray,
    affine: np.ndarray,
    *,
    participant_id: str,
    provenance: dict | None = None,
) -> None:
    """Write one subject's masked frames as float16 (byte-stream split, zstd), with the mask stored once.

    Parameters
    ----------
    data : ndarray, shape (n_timepoints, x, y, z) or (n_timepoints, n_voxels)
        Full-grid frames (masked here) or in-mask voxels already.
    mask : ndarray, shape (x, y, z), bool
    affine : ndarray, shape (4, 4)
    """
    mask = np.asarray(mask, dtype=bool)
    data = np.asarray(data)
    if data.ndim == 4:
        if data.shape[1:] != mask.shape:
            raise ValueError(f"frames grid {data.shape[1:]} does not match mask {mask.shape}")
        data = data[:, mask]
    n_voxels = int(mask.sum())
    if data.ndim != 2 or data.shape[1] != n_voxels:
        raise ValueError(f"data shape {data.shape} does not match {n_voxels} in-mask voxels")
    values = pa.array(data.astype(np.float16).ravel(), type=pa.float16())
    frames = pa.FixedSizeListArray.from_arrays(values, n_voxels) if n_voxels else pa.array(
        [[] for _ in range(data.shape[0])], type=pa.list_(pa.float16(), 0)
    )
    table = pa.table({"t": pa.array(np.arange(data.shape[0], dtype=np.int32)), "frame": frames})
    record = _provenance("volumes", participant_id, provenance)
    record["mask_shape"] = list(mask.shape)
    record["mask_bits"] = base64.b64encode(np.packbits(mask.ravel())).decode()
    record["affine"] = np.asarray(affine, dtype=float).tolist()
    # Byte-stream split, no dictionary: float16 noise has no repeated values for a dictionary to
    # find, and splitting the two bytes of each value lets zstd compress the exponents. Lossless;
    # ~10 % smaller and ~5x faster to read than the dictionary default (bench/results.md).
    _write(path, table, record, encodings={"frame.list.element": "BYTE_STREAM_SPLIT"})


def read_volumes(path: str | os.PathLike) -> Volumes:
    """Read a file written by :func:`write_volumes` (no Python loop over frames)."""
    record = read_metadata(path)
    _check_kind(path, record, "volumes")
    try:
        shape = tuple(int(n) for n in record["mask_shape"])
        bits = np.frombuffer(base64.b64decode(record["mask_bits"], validate=True), dtype=np.uint8)
        mask = np.unpackbits(bits, count=int(np.prod(shape))).astype(bool).reshape(shape)
        affine = np.asarray(record["affine"], dtype=float).reshape(4, 4)
    except (KeyError, TypeError, ValueError) as err:  # binascii.Error is a ValueError
        raise _malformed(path, "volumes metadata (mask, affine)", err) from err
    with _reading(path):
        column = pq.read_table(path, columns=["frame"]).column("frame").combine_chunks()
    flat = column.flatten().to_numpy(zero_copy_only=False)
    if flat.size != len(column) * int(mask.sum()):
        raise InputDataError(
            f"{path}: {flat.size} stored voxel values do not fill {len(column)} frames of the "
            f"{int(mask.sum())}-voxel mask; {REBUILD_HINT}"
        )
    data = flat.astype(np.float16, copy=False).reshape(len(column), int(mask.sum()))
    return Volumes(record["participant_id"], data, mask, affine, record)


def write_table(path: str | os.PathLike, df: pd.DataFrame, *, kind: str, provenance: dict | None = None) -> None:
    """Write a DataFrame (cohort, predictions) with provenance, atomically."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    _write(path, table, _provenance(kind, None, provenance))


def read_table(path: str | os.PathLike, kind: str | None = None) -> pd.DataFrame:
    """Read a table written by :func:`write_table`; check its ``kind`` when given."""
    record = read_metadata(path)
    if kind is not None:
        _check_kind(path, record, kind)
    with _reading(path):
        df = pq.read_table(path).to_pandas()
    df.attrs["brainage"] = record
    return df
