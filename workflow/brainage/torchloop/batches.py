"""Where training windows are cut: on the device from resident frames, or by loader workers."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from brainage.torchloop.data import WindowDataset, WindowSampler, pad_left

# Batches each loader worker keeps ready: enough to cover a slow step without holding many
# pinned copies of a batch.
_PREFETCH = 4


class DeviceWindows:
    """Every training frame resident on the device; a batch is one gather, no loader.

    A few hundred subjects of float16 in-mask volumes take a few GB: on a GPU the copy over
    PCIe then happens once instead of every step, and cutting windows is index arithmetic.

    Parameters
    ----------
    dataset : WindowDataset
    device : torch.device
    """

    def __init__(self, dataset: WindowDataset, device: torch.device):
        padded = [pad_left(a, dataset.window) for a in dataset.arrays]
        self.frames = torch.cat([torch.from_numpy(a) for a in padded]).to(device)  # (sum T, ...)
        self.offsets = torch.tensor(np.cumsum([0] + [len(a) for a in padded[:-1]]), device=device)
        self.targets = torch.from_numpy(dataset.targets).to(device)
        self.steps = torch.arange(dataset.window, device=device)
        self.device = device

    def batch(self, pairs: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """The windows ``(B, window, ...)`` and targets ``(B,)`` of ``(subject, start)`` pairs."""
        index = torch.tensor(pairs, dtype=torch.int64).to(self.device, non_blocking=True)
        rows = (self.offsets[index[:, 0]] + index[:, 1])[:, None] + self.steps  # (B, window)
        return self.frames[rows], self.targets[index[:, 0]]


def resident(dataset: WindowDataset, placement: str, device: torch.device) -> bool:
    """Whether the training frames live on the device (``placement``: auto, device or loader).

    "auto" keeps them on a CUDA device when they fill at most a quarter of its free memory.
    """
    if placement != "auto":
        return placement == "device"
    if device.type != "cuda":
        return False
    nbytes = sum(a.nbytes for a in dataset.arrays)
    return nbytes <= torch.cuda.mem_get_info(device)[0] / 4


def make_loader(dataset: WindowDataset, batch_size: int, workers: int, rng: np.random.Generator,
                device: torch.device, rank: int = 0, world: int = 1) -> DataLoader:
    """The training DataLoader: windows drawn by :class:`WindowSampler`, cut by ``workers`` processes.

    On CUDA, batches land in pinned memory so the copy to the GPU runs asynchronously.
    """
    sampler = WindowSampler(dataset.lengths(), dataset.window, batch_size, rng, rank, world)
    workers = int(workers)
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=_PREFETCH if workers > 0 else None,
    )


def epoch_batches(dataset: WindowDataset, batch_size: int, workers: int, placement: str,
                  rng: np.random.Generator, device: torch.device, rank: int = 0, world: int = 1):
    """An iterable of one epoch's ``(windows, targets)`` batches, re-iterable every epoch.

    The same :class:`WindowSampler` draws the batches either way, so where they are cut
    (:func:`resident`) never changes the result.
    """
    if not resident(dataset, placement, device):
        return make_loader(dataset, batch_size, workers, rng, device, rank, world)
    windows = DeviceWindows(dataset, device)
    return _Batches(WindowSampler(dataset.lengths(), dataset.window, batch_size, rng, rank, world), windows.batch)


class _Batches:
    # Iterable over an epoch's batches of device windows, drawn by the sampler.
    def __init__(self, sampler: WindowSampler, cut):
        self.sampler, self.cut = sampler, cut

    def __iter__(self):
        return (self.cut(pairs) for pairs in self.sampler)
