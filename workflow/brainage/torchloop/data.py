"""Training data: per-subject arrays from our Parquet files, temporal windows, a torch Dataset."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from brainage import storage
from brainage.errors import InputDataError

logger = logging.getLogger(__name__)


def index_inputs(paths: Sequence[str | os.PathLike]) -> dict[str, str]:
    """Map participant_id -> file from each file's metadata (no data is read).

    Raises
    ------
    InputDataError
        If two files belong to the same participant.
    """
    index: dict[str, str] = {}
    for path in paths:
        pid = str(storage.read_metadata(path)["participant_id"])
        if pid in index:
            raise InputDataError(f"{path}: participant {pid!r} already has an input file ({index[pid]})")
        index[pid] = os.fspath(path)
    return index


def load_inputs(
    paths: Sequence[str | os.PathLike], participant_ids: Sequence[str], input_kind: str
) -> tuple[list[np.ndarray], list[str]]:
    """Read the arrays of the given participants, in their order; other files are ignored.

    Parameters
    ----------
    paths : sequence of path
        Series files (``input_kind="series"``) or volume files (``"volumes"``) of any subjects.
    participant_ids : sequence of str
        The subjects to read (the cohort); each must have exactly one file.
    input_kind : {"series", "volumes"}

    Returns
    -------
    arrays : list
        "series": float32 ndarrays (n_timepoints, n_regions); "volumes":
        :class:`brainage.storage.Volumes` (float16 in-mask voxels and the mask: the stored
        precision and layout; :func:`masked_frames` aligns them, full grids are never built).
    sources : list of str
        File names (no folder) of the files read, in the same order (for provenance).

    Raises
    ------
    InputDataError
        If a participant has no file (the message names them), a file has no frames, or the
        regions / grids differ between subjects.
    """
    index = index_inputs(paths)
    missing = [pid for pid in participant_ids if pid not in index]
    if missing:
        listed = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise InputDataError(f"no {input_kind} file for cohort participant(s) {listed} among the {len(index)} input files")
    ignored = len(index) - len(set(participant_ids))
    if ignored:
        logger.info("ignoring %d input file(s) of subjects outside the cohort", ignored)
    arrays, reference = [], None
    for pid in participant_ids:
        array, layout = _read_one(index[pid], input_kind)
        reference = layout if reference is None else reference
        if layout != reference:
            raise InputDataError(f"{index[pid]}: {input_kind} layout {layout} differs from the first subject's {reference}")
        if (array.data if input_kind == "volumes" else array).shape[0] == 0:
            raise InputDataError(f"{index[pid]}: participant {pid!r} has no time points")
        arrays.append(array)
    return arrays, [os.path.basename(index[pid]) for pid in participant_ids]


def _read_one(path: str, input_kind: str) -> tuple[np.ndarray, object]:
    # Returns the array and what must agree across subjects (labels, or grid shape).
    if input_kind == "series":
        series = storage.read_timeseries(path)
        return series.data, tuple(series.labels)
    if input_kind == "volumes":
        volumes = storage.read_volumes(path)
        return volumes, tuple(volumes.mask.shape)
    raise ValueError(f"unknown input kind {input_kind!r}; expected 'series' or 'volumes'")


def pad_left(array: np.ndarray, length: int) -> np.ndarray:
    """Prepend zero frames so that ``array`` has ``length`` time points.

    Zeros go *before* the data so that a recurrent network's last state is read right after
    the last real frame; the inputs are z-scored, so zero is the mean signal.

    Parameters
    ----------
    array : ndarray, shape (n_timepoints, ...)
    length : int
        At least n_timepoints.
    """
    missing = length - array.shape[0]
    if missing <= 0:
        return array
    return np.concatenate([np.zeros((missing, *array.shape[1:]), dtype=array.dtype), array])


def window_starts(n_timepoints: int, window: int) -> np.ndarray:
    """First frames of non-overlapping windows covering a run; the last one ends the run.

    ``predict_network`` reads every frame this way: a run of 10 frames in windows of 4 gives
    starts 0, 4, 6 (frames 6-7 are read twice, none is skipped).

    Parameters
    ----------
    n_timepoints : int
        Frames of the run, at least ``window`` (shorter runs are left-padded first).
    window : int

    Returns
    -------
    ndarray of int64, shape (n_windows,)
    """
    starts = np.arange(0, n_timepoints - window + 1, window)
    if starts[-1] != n_timepoints - window:
        starts = np.append(starts, n_timepoints - window)
    return starts


def masked_frames(X, mask: np.ndarray | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """Put every subject's frames on one voxel list: the union of their masks, or ``mask``.

    Volumes are kept as in-mask voxels, not full grids: at 4 mm a brain fills about a fifth of
    its bounding box, so memory, host-to-device copies and loader work shrink five-fold. The
    network scatters them back onto the grid on the device (``CnnRnnNet``).

    Parameters
    ----------
    X : sequence of Volumes or ndarray
        :class:`brainage.storage.Volumes` (as :func:`load_inputs` returns them) or full grids
        ``(n_timepoints, x, y, z)`` (zeros outside the brain; the mask is where any frame is
        non-zero). All on the same grid.
    mask : ndarray of bool, shape (x, y, z), optional
        The voxels to keep (a fitted model's training mask); voxels of a subject outside it are
        dropped, mask voxels outside the subject's own mask are zero. Default: the union.

    Returns
    -------
    frames : list of ndarray, each (n_timepoints, n_voxels), float16
        In-mask voxels in C order of the grid.
    mask : ndarray of bool, shape (x, y, z)

    Raises
    ------
    ValueError
        If the grids differ between subjects or from ``mask``.
    """
    pairs = [_own_mask(item) for item in X]
    shapes = sorted({m.shape for _, m in pairs} | ({mask.shape} if mask is not None else set()))
    if len(shapes) > 1:
        raise ValueError(f"every subject needs frames on the same grid, found grids {shapes}")
    if mask is None:
        mask = np.logical_or.reduce([m for _, m in pairs])
    keep = np.flatnonzero(mask)
    frames = []
    for data, own in pairs:
        out = np.zeros((data.shape[0], keep.size), dtype=np.float16)
        own_idx = np.flatnonzero(own)
        pos = np.searchsorted(keep, own_idx).clip(max=max(keep.size - 1, 0))
        inside = keep[pos] == own_idx if keep.size else np.zeros(own_idx.size, dtype=bool)
        out[:, pos[inside]] = data[:, inside]  # one fancy-index per subject
        frames.append(out)
    return frames, mask


def shared_affine(X, atol: float = 1e-3) -> np.ndarray | None:
    """The voxel-to-world affine the subjects' :class:`brainage.storage.Volumes` share.

    Parameters
    ----------
    X : sequence of Volumes or ndarray
        As :func:`masked_frames` takes them; bare grids carry no affine.
    atol : float
        Largest difference (mm) between two affines still counted as one grid (header rounding).

    Returns
    -------
    ndarray of float64, shape (4, 4), or None
        None when no item is a Volumes.

    Raises
    ------
    ValueError
        If two subjects' affines differ.
    """
    affines = [(item.participant_id, np.asarray(item.affine, dtype=np.float64))
               for item in X if isinstance(item, storage.Volumes)]
    for pid, affine in affines[1:]:
        if affine.shape != (4, 4) or not np.allclose(affine, affines[0][1], atol=atol):
            raise ValueError(f"every subject needs frames on the same grid, but the affine of {pid} "
                             f"{np.round(affine, 3).tolist()} differs from {affines[0][0]}'s "
                             f"{np.round(affines[0][1], 3).tolist()}")
    return affines[0][1] if affines else None


def _own_mask(item) -> tuple[np.ndarray, np.ndarray]:
    # (in-mask data (T, n_own), own mask) of a Volumes object or a full-grid array.
    if isinstance(item, storage.Volumes):
        return item.data, item.mask
    grid = np.asarray(item)
    if grid.ndim != 4:
        raise ValueError(f"volumes need 4 dimensions (n_timepoints, x, y, z), got shape {grid.shape}")
    own = np.any(grid != 0, axis=0)
    return grid[:, own], own


class WindowSampler(Sampler):
    """Batches of ``(subject, start)`` pairs: shuffled subjects, one random window start each.

    The random draws happen here, in the main process, so that loader worker processes only
    cut the windows they are given: batches are the same for any number of workers, and the
    generator's state (saved with each epoch's checkpoint) fixes the rest of the run.

    Parameters
    ----------
    lengths : sequence of int
        Frames per subject.
    window, batch_size : int
        ``batch_size`` is the global batch: with several processes each takes its share.
    rng : numpy.random.Generator
        Seeded alike in every process, so that all draw the same global batches.
    rank, world : int
        This process and the number of processes (distributed data parallel): process
        ``rank`` takes pairs ``rank, rank + world, ...`` of each global batch; a last batch
        with fewer pairs than processes is skipped (every process must take a step).
    """

    def __init__(self, lengths, window: int, batch_size: int, rng: np.random.Generator, rank: int = 0, world: int = 1):
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.window, self.batch_size, self.rng = int(window), int(batch_size), rng
        self.rank, self.world = int(rank), int(world)

    def __len__(self) -> int:
        n, b = len(self.lengths), self.batch_size
        return n // b + (n % b >= self.world)

    def __iter__(self):
        order = self.rng.permutation(len(self.lengths))
        # Runs shorter than the window are left-padded to it: their only start is 0.
        starts = self.rng.integers(0, np.maximum(self.lengths[order] - self.window, 0) + 1)
        pairs = list(zip(order.tolist(), starts.tolist()))
        for i in range(0, len(pairs), self.batch_size):
            batch = pairs[i : i + self.batch_size]
            if len(batch) >= self.world:
                yield batch[self.rank :: self.world]


class WindowDataset(Dataset):
    """Training windows: item ``(subject, start)`` is that subject's frames ``start:start+window``.

    Random windows are the training augmentation for series and volumes alike: each epoch
    sees a different stretch of every run (:class:`WindowSampler` draws them).

    Parameters
    ----------
    arrays : list of ndarray, each (n_timepoints, ...)
        float32 series or float16 in-mask volumes; windows keep the dtype (float16 halves the
        bytes copied to the GPU; the network casts).
    targets : ndarray, shape (n_subjects,)
        Training targets (z-scored ages).
    window : int
        Frames per window; shorter runs are left-padded with zeros.
    """

    def __init__(self, arrays: list[np.ndarray], targets: np.ndarray, window: int):
        if len(arrays) != len(targets):
            raise ValueError(f"{len(arrays)} arrays for {len(targets)} targets")
        self.arrays = arrays
        self.targets = np.asarray(targets, dtype=np.float32)
        self.window = int(window)

    def __len__(self) -> int:
        return len(self.arrays)

    def lengths(self) -> list[int]:
        """Frames per subject (for :class:`WindowSampler`)."""
        return [a.shape[0] for a in self.arrays]

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        i, start = item
        array = pad_left(self.arrays[i], self.window)
        frames = np.ascontiguousarray(array[start : start + self.window])
        return torch.from_numpy(frames), torch.tensor(self.targets[i])
