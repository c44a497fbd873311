"""Stream a 4D NIfTI (.nii or .nii.gz) block of frames by block through one sparse matrix."""

from __future__ import annotations

import os
import queue
import threading
from contextlib import closing
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.volumeutils import apply_read_scaling
from scipy import sparse
from zlib_ng import gzip_ng, zlib_ng

from brainage.errors import InputDataError

#: Decoded bytes per block (whole frames; at least one frame): a 2 mm frame is ~4.4 MB in
#: float32, so ~8 frames. Small enough that memory stays near a few blocks, large enough that
#: the per-block overhead (thread hand-over, sparse product set-up) is negligible.
BLOCK_BYTES = 32 * 2**20

_GZIP_MAGIC = b"\x1f\x8b"
# What a truncated or corrupt gzip stream raises: EOFError (stream ends early),
# gzip.BadGzipFile (an OSError: bad header or CRC), zlib_ng.error (bad deflate data).
_DECODE_ERRORS = (EOFError, OSError, zlib_ng.error)


def read_header(path: str | os.PathLike) -> nib.Nifti1Image:
    """Open a NIfTI image without reading its data (header, affine and shape only).

    Returns
    -------
    Nifti1Image or Nifti2Image
        ``img.dataobj`` is an unread proxy.

    Raises
    ------
    InputDataError
        If the file is missing, is not a NIfTI-1/2 image, or its header cannot be read.
    """
    try:
        img = nib.load(path)
    except (ImageFileError, *_DECODE_ERRORS) as err:
        raise InputDataError(f"{path}: not a readable NIfTI image: missing, truncated or corrupt ({err})") from err
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputDataError(f"{path}: expected a single-file NIfTI image (.nii or .nii.gz), "
                             f"found {type(img).__name__}")
    return img


def read_data(path: str | os.PathLike, img: nib.Nifti1Image) -> np.ndarray:
    """The whole image array of a small image opened with :func:`read_header` (a mask, say).

    Raises
    ------
    InputDataError
        If the data are truncated or corrupt (the header alone can read fine).
    """
    try:
        return np.asanyarray(img.dataobj)
    except (*_DECODE_ERRORS, ValueError) as err:
        # ValueError: an uncompressed file shorter than its header says ("buffer is too small").
        detail = " ".join(str(err).split())  # nibabel's message may hold a line break
        raise InputDataError(f"{path}: truncated or corrupt image data ({type(err).__name__}: {detail})") from err


def reduce_bold(path: str | os.PathLike, weights) -> np.ndarray:
    """Multiply every frame of a 4D NIfTI by a sparse matrix while the file is decoded.

    Equals ``np.asanyarray(nib.load(path).dataobj).reshape(-1, n_timepoints, order="F").T
    .astype(np.float64) @ weights`` (values scaled by ``scl_slope``/``scl_inter`` exactly as
    nibabel scales them), without ever holding the 4D array: a background thread decodes
    blocks of whole frames (zlib-ng, which releases the GIL; fastest of the decoders measured
    in bench/results.md) while this thread multiplies the previous block.

    Parameters
    ----------
    path : path
        4D ``.nii`` or ``.nii.gz`` (one or several gzip members; any ``vox_offset``).
    weights : scipy sparse array or matrix, shape (n_grid_voxels, n_columns)
        Rows: every voxel of the 3D grid in NIfTI (Fortran, x fastest) order; columns: the
        signals wanted (e.g. region or block memberships). Voxels whose row holds no stored
        entry are never read into the product.

    Returns
    -------
    ndarray, shape (n_timepoints, n_columns), float64
        Row ``t`` is frame ``t`` (flattened in Fortran order) ``@ weights``.

    Raises
    ------
    InputDataError
        If the file is not a 4D NIfTI image, or is truncated or corrupt.
    ValueError
        If ``weights`` does not have one row per voxel of the grid.
    """
    img = read_header(path)
    shape = tuple(int(n) for n in img.shape)
    if len(shape) != 4:
        raise InputDataError(f"{path}: expected a 4D image (x, y, z, time), found shape {shape}")
    n_voxels, n_timepoints = int(np.prod(shape[:3])), shape[3]
    if not sparse.issparse(weights) or weights.ndim != 2 or weights.shape[0] != n_voxels:
        raise ValueError(f"weights must be a 2D sparse array with one row per voxel of the grid of {path} "
                         f"({shape[:3]} = {n_voxels} voxels), found {type(weights).__name__} of shape "
                         f"{getattr(weights, 'shape', None)}")
    rows, used = _used_rows(weights)
    out = np.empty((n_timepoints, weights.shape[1]), dtype=np.float64)
    proxy = img.dataobj
    with closing(_frame_blocks(path, proxy.offset, proxy.dtype, n_voxels, n_timepoints)) as blocks:
        for start, block in blocks:
            out[start:start + len(block)] = _scaled(block[:, rows], proxy).astype(np.float64, copy=False) @ used
    return out


def _used_rows(weights) -> tuple[np.ndarray, sparse.csr_array]:
    """Voxels with a stored weight, and the weights restricted to them (CSR, sorted indices)."""
    csr = sparse.csr_array(weights)
    rows = np.flatnonzero(np.diff(csr.indptr))
    used = csr[rows]
    used.sort_indices()
    return rows, used


def _scaled(raw: np.ndarray, proxy) -> np.ndarray:
    """Apply the image's scaling to stored values, in the dtype nibabel's ``ArrayProxy`` picks.

    Mirrors ``ArrayProxy._get_scaled(dtype=None)``; the dtype depends only on the stored dtype
    and the scale factors, never on the values, so scaling block by block gives the same numbers.
    """
    slope, inter = np.asanyarray(proxy.slope), np.asanyarray(proxy.inter)
    if np.can_cast(inter, slope.dtype):
        inter = inter.astype(slope.dtype)
    return apply_read_scaling(raw, slope, inter)


def _frame_blocks(path, offset: int, dtype: np.dtype, n_voxels: int, n_timepoints: int):
    """Yield ``(first_frame, block)`` with ``block`` (n_frames, n_voxels) of stored values, in order.

    A reader thread fills a small pool of buffers (decoding releases the GIL) while the
    caller works on the block it was handed; the block's memory is reused once the caller
    asks for the next one, so it must not be kept.
    """
    frame_bytes = n_voxels * dtype.itemsize
    per_block = max(1, min(n_timepoints, BLOCK_BYTES // max(frame_bytes, 1)))
    pool: queue.Queue = queue.Queue()
    for _ in range(3):
        pool.put(bytearray(per_block * frame_bytes))
    ready: queue.Queue = queue.Queue()
    stop = threading.Event()
    reader = threading.Thread(target=_read_blocks, name="reduce_bold-reader", daemon=True,
                              args=(path, offset, frame_bytes, per_block, n_timepoints, pool, ready, stop))
    reader.start()
    try:
        start = 0
        while start < n_timepoints:
            item = ready.get()
            if isinstance(item, BaseException):
                raise item
            buffer, n_frames = item
            yield start, np.frombuffer(buffer, dtype=dtype, count=n_frames * n_voxels).reshape(n_frames, n_voxels)
            pool.put(buffer)
            start += n_frames
    finally:
        stop.set()
        pool.put(None)  # wakes a reader waiting for a buffer
        reader.join()


def _read_blocks(path, offset, frame_bytes, per_block, n_timepoints, pool, ready, stop) -> None:
    """Reader thread: decode whole-frame blocks into pool buffers and hand them over (or the error)."""
    try:
        with _open(path) as stream:
            _read_exactly(stream, memoryview(bytearray(offset)), path, "header")
            done = 0
            while done < n_timepoints and not stop.is_set():
                buffer = pool.get()
                if buffer is None:
                    return
                n_frames = min(per_block, n_timepoints - done)
                what = f"frames {done}-{done + n_frames - 1}"
                _read_exactly(stream, memoryview(buffer)[:n_frames * frame_bytes], path, what)
                ready.put((buffer, n_frames))
                done += n_frames
    except InputDataError as err:
        ready.put(err)
    except _DECODE_ERRORS as err:
        ready.put(InputDataError(f"{path}: truncated or corrupt gzip data ({type(err).__name__}: {err})"))
    except BaseException as err:  # noqa: BLE001 - handed to the caller's thread, which raises it
        ready.put(err)


def _open(path):
    """A binary stream of the file's uncompressed bytes (zlib-ng for gzip, any number of members)."""
    with open(path, "rb") as probe:
        gzipped = probe.read(2) == _GZIP_MAGIC
    return gzip_ng.open(path, "rb") if gzipped else open(path, "rb", buffering=0)


def _read_exactly(stream, view: memoryview, path, what: str) -> None:
    """Fill ``view`` from ``stream``; an early end of data means a truncated file."""
    filled = 0
    while filled < len(view):
        n = stream.readinto(view[filled:])
        if not n:
            raise InputDataError(f"{Path(path)}: truncated or corrupt: the data ends {len(view) - filled} bytes "
                                 f"short while reading the {what}")
        filled += n
