"""Training data: per-subject arrays from our Parquet files, temporal windows, a torch Dataset."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

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
    arrays : list of ndarray
        "series": float32 (n_timepoints, n_regions); "volumes": float16 (n_timepoints, x, y, z),
        zeros outside the mask. float16 is the stored precision, so nothing is lost and memory
        halves; batches are cast to float32 when they are cut.
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
        if array.shape[0] == 0:
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
        return volumes.to_grid(np.float16), tuple(volumes.mask.shape)
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


def sliding_windows(array: np.ndarray, window: int) -> np.ndarray:
    """Cut a run into non-overlapping windows covering every frame (the last one ends the run).

    Parameters
    ----------
    array : ndarray, shape (n_timepoints, ...)
    window : int

    Returns
    -------
    ndarray, shape (n_windows, window, ...), float32
        A run shorter than ``window`` gives one left-padded window.
    """
    array = pad_left(array, window)
    n_timepoints = array.shape[0]
    starts = np.arange(0, n_timepoints - window + 1, window)
    if starts[-1] != n_timepoints - window:
        starts = np.append(starts, n_timepoints - window)
    # (n_windows, 1) + (1, window) -> frame indices; one fancy-indexing call, no frame loop.
    return array[starts[:, None] + np.arange(window)].astype(np.float32, copy=False)


class WindowDataset(Dataset):
    """One random temporal window per subject and access, with the subject's target.

    Random windows are the training augmentation for series and volumes alike: each epoch
    sees a different stretch of every run.

    Parameters
    ----------
    arrays : list of ndarray, each (n_timepoints, ...)
    targets : ndarray, shape (n_subjects,)
        Training targets (z-scored ages).
    window : int
        Frames per window; shorter runs are left-padded with zeros.
    rng : numpy.random.Generator
        Draws the window starts (single-process loading keeps the order reproducible).
    """

    def __init__(self, arrays: list[np.ndarray], targets: np.ndarray, window: int, rng: np.random.Generator):
        if len(arrays) != len(targets):
            raise ValueError(f"{len(arrays)} arrays for {len(targets)} targets")
        self.arrays = arrays
        self.targets = np.asarray(targets, dtype=np.float32)
        self.window = int(window)
        self.rng = rng

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        array = pad_left(self.arrays[i], self.window)
        start = int(self.rng.integers(0, array.shape[0] - self.window + 1))
        frames = np.ascontiguousarray(array[start : start + self.window], dtype=np.float32)
        return torch.from_numpy(frames), torch.tensor(self.targets[i])
