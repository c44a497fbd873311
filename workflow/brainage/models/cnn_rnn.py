"""cnn_rnn: a 3D CNN encodes every downsampled frame, a GRU/LSTM reads the frames, a head predicts age."""

from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np
import torch
from torch import nn

from brainage.errors import ConfigError, InputDataError
from brainage.models._inputs import check_arrays
from brainage.models._torch import TorchAgeModel, TorchConfig
from brainage.storage import Volumes, read_torch
from brainage.torchloop.data import masked_frames, shared_affine

logger = logging.getLogger(__name__)

# Training-time jitter. Inputs are z-scored per voxel, so 0.1 is 10 % of a voxel's standard
# deviation: a small per-window gain (scanner/site intensity differences) and voxel noise.
SCALE_JITTER = 0.1
NOISE_STD = 0.1
# Spatial summary kept next to the global average: mean of each octant of the feature map.
_SUMMARY_GRID = 2
_RNNS = {"gru": nn.GRU, "lstm": nn.LSTM}
# mirror_index: off-diagonal affine terms below this fraction of the x voxel size count as zero
# (header rounding), and the share of in-mask voxels with an in-mask mirror below which a grid
# is reported as unlikely to be in MNI space (brain masks there are near-symmetric).
_AXIS_TOLERANCE = 1e-3
_MIN_MIRRORED = 0.5


@dataclasses.dataclass(frozen=True)
class CnnRnnConfig(TorchConfig):
    """Parameters of ``cnn_rnn`` and their defaults (config/config.yaml lists the same values).

    Attributes
    ----------
    channels : tuple of int
        Output channels of each 3D conv block; each block halves the grid.
    rnn : {"gru", "lstm"}
        Recurrent layer over the frame embeddings.
    augment : bool
        Random left-right flips about world x = 0 (:func:`mirror_index`; none for inputs
        without an affine), per-window gain and voxel noise during training (random temporal
        windows are always used).
    pretrain : bool
        Initialise the frame encoder from the self-supervised stage (``brainage.pretrain``);
        the workflow then hands the fold's encoder file to ``train_model`` (``init_encoder``).
    hidden, window, epochs, batch_size, patience
        See :class:`~brainage.models._torch.TorchConfig`.
    """

    hidden: int = 32
    window: int = 24
    epochs: int = 40
    batch_size: int = 8
    patience: int = 12
    channels: tuple[int, ...] = (8, 16)
    rnn: str = "gru"
    augment: bool = True
    pretrain: bool = False

    def __post_init__(self):
        super().__post_init__()
        if not self.channels or any(not isinstance(c, int) or c < 1 for c in self.channels):
            raise ConfigError(f"cnn_rnn: channels must be a non-empty list of integers >= 1, got {self.channels!r}")
        if self.rnn not in _RNNS:
            raise ConfigError(f"cnn_rnn: rnn {self.rnn!r} is not one of {', '.join(_RNNS)}")


class FrameEncoder(nn.Module):
    """Per block: Conv3d(k3, stride 2) + BatchNorm3d + ReLU; then global mean + 2x2x2 octant means.

    The stride-2 convolution is the downsampling (all-convolutional net, Springenberg et al.
    2015, arXiv:1412.6806): on CPU it is ~8x faster than a full-resolution convolution
    followed by pooling, which is what keeps a fold within the demo's time budget.

    Parameters
    ----------
    channels : sequence of int

    Attributes
    ----------
    out_features : int
        Embedding size E = C_last * (1 + 2**3).
    """

    def __init__(self, channels: tuple[int, ...]):
        super().__init__()
        blocks, c_in = [], 1
        for c_out in channels:
            conv = StemConv(c_out) if c_in == 1 else nn.Conv3d(c_in, c_out, kernel_size=3, stride=2, padding=1)
            blocks += [conv, nn.BatchNorm3d(c_out), nn.ReLU()]
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        self.out_features = c_in * (1 + _SUMMARY_GRID**3)
        self._octants: dict = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map frames ``(N, 1, X, Y, Z)``, or their space-to-depth form (:class:`Unmask`), to ``(N, E)``."""
        f = self.features(x)  # (N, 1, X, Y, Z) -> (N, C, X', Y', Z')
        n, c = f.shape[:2]
        # Voxels x channels: a view of a channels-last map. The 2x2x2 summary is then one matrix
        # product (AdaptiveAvgPool3d's backward scatters with atomics and converts layouts).
        flat = f.permute(0, 2, 3, 4, 1).reshape(n, -1, c)  # (N, S, C)
        pooled = flat.mean(dim=1)  # (N, C)
        local = self._octant_weights(f).T @ flat  # (8, S) @ (N, S, C) -> (N, 8, C)
        return torch.cat([pooled, local.transpose(1, 2).flatten(1)], dim=1)  # (N, C + 8C)

    def _octant_weights(self, f: torch.Tensor) -> torch.Tensor:
        # (S, 8) averaging weights of nn.AdaptiveAvgPool3d(2) bins over the map's grid (an odd
        # axis shares its middle voxel between both halves, as there), cached per shape.
        key = (tuple(f.shape[2:]), f.device, f.dtype)
        if key not in self._octants:
            axes = []
            for size in key[0]:
                w = torch.zeros(size, _SUMMARY_GRID, dtype=torch.float64)
                for k in range(_SUMMARY_GRID):
                    start, end = k * size // _SUMMARY_GRID, -(-(k + 1) * size // _SUMMARY_GRID)
                    w[start:end, k] = 1.0 / (end - start)
                axes.append(w)
            weights = torch.einsum("ia,jb,kc->ijkabc", *axes).reshape(-1, _SUMMARY_GRID**3)
            self._octants[key] = weights.to(device=f.device, dtype=f.dtype)
        return self._octants[key]


# Tap of the k3/stride-2/pad-1 kernel (0, 1, 2 for input offsets -1, 0, +1 of 2i) that a k2
# stride-1 kernel over 2x2x2 blocks reads at block offset q (0: block i-1, 1: block i) and phase p
# (position in the block); None: that block position is outside the k3 kernel (weight zero).
_STEM_TAP = {(0, 0): None, (0, 1): 0, (1, 0): 1, (1, 1): 2}


def _stem_gather_index() -> torch.Tensor:
    """Index into a flattened k3x3x3 kernel plus one trailing zero, in (phase, offset) order.

    Returns
    -------
    Tensor of int64, shape (64,)
        Position ``((px*4 + py*2 + pz)*8 + qx*4 + qy*2 + qz)`` holds the tap ``kx*9 + ky*3 + kz``,
        or 27 (the zero) where an axis has no tap.
    """
    index = []
    for px, py, pz, qx, qy, qz in np.ndindex(2, 2, 2, 2, 2, 2):
        taps = [_STEM_TAP[q, p] for q, p in ((qx, px), (qy, py), (qz, pz))]
        index.append(27 if None in taps else taps[0] * 9 + taps[1] * 3 + taps[2])
    return torch.tensor(index)


class StemConv(nn.Conv3d):
    """The first block's Conv3d(1, C, k3, stride 2, pad 1), also run on space-to-depth frames.

    A one-channel 3D convolution keeps GPU tensor cores idle (cuDNN runs it in generic
    kernels). On frames cut into 2x2x2 blocks with the 8 voxels of a block as channels (see
    :class:`Unmask`) the same convolution is a k2, stride-1 convolution over 8 channels, whose
    weights are this layer's k3 weights rearranged (a gather, exact). The parameters stay those
    of the plain convolution, so state dicts, pretrained encoders and results do not depend
    on the layout: a 1-channel input runs the plain convolution.
    """

    def __init__(self, c_out: int):
        super().__init__(1, c_out, kernel_size=3, stride=2, padding=1)
        self.register_buffer("gather", _stem_gather_index(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 1, X, Y, Z)`` or ``(N, 8, X2 + 1, Y2 + 1, Z2 + 1)`` -> ``(N, C, X2, Y2, Z2)``."""
        if x.shape[1] == 1:
            return super().forward(x)
        taps = torch.cat([self.weight.flatten(1), self.weight.new_zeros(self.out_channels, 1)], dim=1)
        weight = taps[:, self.gather].reshape(self.out_channels, 8, 2, 2, 2)  # (C, 28) -> (C, 8, 2, 2, 2)
        return nn.functional.conv3d(x, weight.contiguous(memory_format=torch.channels_last_3d), self.bias)


class Unmask(nn.Module):
    """Scatter in-mask voxels ``(N, V)`` onto the grid (zeros outside), by default as 2x2x2 blocks.

    Frames travel as in-mask voxels (a fifth of the grid at 4 mm) and become grids on the
    device, in the autocast dtype, channels-last (the layout cuDNN's 3D kernels prefer).

    With ``space_to_depth`` (default) the grid ``(X, Y, Z)`` is cut into 2x2x2 blocks whose 8
    voxels (x%2, y%2, z%2) are channels, with one zero block leading each axis (the first
    convolution's padding): ``(N, 8, X2 + 1, Y2 + 1, Z2 + 1)``, X2 = ceil(X / 2). The scatter
    writes that layout directly, at no extra cost; :class:`StemConv` reads it. Otherwise
    ``(N, 1, X, Y, Z)``.

    Parameters
    ----------
    mask : ndarray of bool, shape (X, Y, Z)
    space_to_depth : bool
    affine : ndarray, shape (4, 4), optional
        Voxel-to-world (mm) affine of the grid: ``flip_index`` (:func:`mirror_index`) mirrors
        about world x = 0. None (frames given as bare grids), or a grid whose x axis is not
        the first voxel axis: ``flip_index`` is None and there are no flips.
    """

    def __init__(self, mask: np.ndarray, space_to_depth: bool = True, affine: np.ndarray | None = None):
        super().__init__()
        mask = np.asarray(mask, dtype=bool)
        self.grid_shape = tuple(int(n) for n in mask.shape)
        if space_to_depth:
            blocks = tuple(n // 2 + n % 2 + 1 for n in self.grid_shape)
            x, y, z = np.nonzero(mask)  # C order, as flatnonzero
            channel = (x % 2) * 4 + (y % 2) * 2 + z % 2
            index = ((((x // 2 + 1) * blocks[1] + y // 2 + 1) * blocks[2] + z // 2 + 1) * 8 + channel)
            self.layout = (*blocks, 8)  # channels-last storage of (8, *blocks)
        else:
            index, self.layout = np.flatnonzero(mask), (*self.grid_shape, 1)
        # Derived from the mask (which the model saves): not part of the state dict, so a state
        # dict never carries positions of another layout.
        self.register_buffer("index", torch.from_numpy(index.astype(np.int64)), persistent=False)
        flip = None if affine is None else mirror_index(mask, affine)
        self.register_buffer("flip_index", None if flip is None else torch.from_numpy(flip), persistent=False)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints written before the positions became non-persistent carry them: drop them
        # (they were the plain grid's; this layout's are derived from the mask).
        for name in ("index", "flip_index"):
            state_dict.pop(prefix + name, None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(N, V)`` to ``(N, 8, X2 + 1, Y2 + 1, Z2 + 1)`` or ``(N, 1, X, Y, Z)``, channels-last."""
        dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else torch.float32
        grid = torch.zeros((x.shape[0], int(np.prod(self.layout))), dtype=dtype, device=x.device)
        grid[:, self.index] = x.to(dtype)
        return grid.view(x.shape[0], *self.layout).permute(0, 4, 1, 2, 3)  # a channels-last view


def mirror_index(mask: np.ndarray, affine: np.ndarray) -> np.ndarray | None:
    """For each in-mask voxel, the position of its mirror about world x = 0 among the in-mask voxels.

    Brains in MNI space are near-symmetric about the midline x = 0, which need not be the
    grid's centre (4 mm blocks of fMRIPrep's 2 mm MNI152NLin2009cAsym grid put x = 0 at voxel
    23.75 of 49). The mirror of voxel ``(i, j, k)`` is ``(m - i, j, k)`` with ``m`` the whole
    number nearest ``2 * i0``, ``i0`` the voxel coordinate of x = 0: the grid voxel whose centre
    is nearest to ``-x``. A whole ``m`` keeps the flip a permutation of voxels (an involution,
    no interpolation, so flipped frames are as sharp as the others); the price is a mirror
    plane up to a quarter of a voxel off x = 0 (exact when x = 0 is a voxel centre or lies
    half-way between two; 1 mm at 4 mm and at 8 mm on that MNI grid; a tie, 2 * i0 at a
    half, takes the larger ``m``). A mirror off the grid or outside the mask gets ``V`` (one
    past the end: a zero column appended before gathering), as outside the brain.

    Parameters
    ----------
    mask : ndarray of bool, shape (X, Y, Z)
    affine : ndarray, shape (4, 4)
        Voxel-to-world (mm) affine of the grid.

    Returns
    -------
    ndarray of int64, shape (V,), or None
        None when world x is not along the first voxel axis alone (an oblique or permuted
        grid): a mirror about x = 0 is then no permutation of voxels, and no flip is better than
        a wrong one (logged as a warning).
    """
    mask = np.asarray(mask, dtype=bool)
    a = np.asarray(affine, dtype=float)
    if a[0, 0] == 0 or np.any(np.abs([a[0, 1], a[0, 2], a[1, 0], a[2, 0]]) > _AXIS_TOLERANCE * abs(a[0, 0])):
        logger.warning("left-right flips off: world x is not the first voxel axis of the grid (affine %s)",
                       np.round(a, 3).tolist())
        return None
    # x(i) = a00 * i + a03 = 0 at i0 = -a03 / a00; rounded first so that float noise in the
    # header does not move a tie.
    m = int(np.floor(np.round(-2.0 * a[0, 3] / a[0, 0], 6) + 0.5))
    position = np.full(mask.shape, mask.sum(), dtype=np.int64)
    position[mask] = np.arange(mask.sum())
    i, j, k = np.nonzero(mask)  # C order, as the in-mask voxels
    mirror = m - i
    inside = (mirror >= 0) & (mirror < mask.shape[0])
    out = np.full(i.size, mask.sum(), dtype=np.int64)
    out[inside] = position[mirror[inside], j[inside], k[inside]]
    if i.size and np.mean(out < i.size) < _MIN_MIRRORED:
        logger.warning("left-right flips: only %.0f%% of the in-mask voxels have a mirror about x = 0 in the mask "
                       "(the rest flip to zero); is the grid in MNI space?", 100 * np.mean(out < i.size))
    return out


class CnnRnnNet(nn.Module):
    """Unmask -> FrameEncoder shared across frames -> GRU/LSTM over frames -> dropout -> Linear.

    Parameters
    ----------
    channels : sequence of int
    hidden : int
    rnn : {"gru", "lstm"}
    dropout : float
    mask : ndarray of bool, shape (X, Y, Z)
        The grid voxels the inputs carry.
    space_to_depth : bool
        Frames reach the first convolution as 2x2x2 blocks (:class:`Unmask`, :class:`StemConv`);
        the same function, faster on GPUs. False: as a 1-channel grid.
    affine : ndarray, shape (4, 4), optional
        The grid's voxel-to-world affine, for left-right flips about x = 0 (:class:`Unmask`).
    """

    def __init__(self, channels: tuple[int, ...], hidden: int, rnn: str, dropout: float, mask: np.ndarray,
                 space_to_depth: bool = True, affine: np.ndarray | None = None):
        super().__init__()
        self.unmask = Unmask(mask, space_to_depth, affine)
        self.encoder = FrameEncoder(channels)
        self.rnn = _RNNS[rnn](self.encoder.out_features, hidden, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map windows ``(B, T, V)`` of in-mask voxels (float16/32) to z-scored ages ``(B,)``."""
        b, t = x.shape[:2]
        # All frames of all windows through the CNN in one call.
        frames = self.unmask(x.reshape(b * t, -1))  # (B, T, V) -> (B*T, 8, X2+1, Y2+1, Z2+1)
        e = self.encoder(frames).reshape(b, t, -1)  # (B*T, E) -> (B, T, E)
        out, _ = self.rnn(e.float())  # (B, T, E) -> (B, T, H)
        return self.head(self.dropout(out[:, -1])).squeeze(-1)  # (B, H) -> (B,)


def augment_volumes(
    batch: torch.Tensor,
    generator: torch.Generator,
    flip_index: torch.Tensor | None,
    *,
    scale_std: float = SCALE_JITTER,
    noise_std: float = NOISE_STD,
) -> torch.Tensor:
    """Randomly flip left-right, scale and add in-brain noise to a batch of windows.

    Parameters
    ----------
    batch : Tensor, shape (B, T, V)
        In-mask voxels, on the generator's device.
    generator : torch.Generator
    flip_index : Tensor of int64, shape (V,), optional
        :func:`mirror_index` of the mask (mirror about world x = 0); each window is flipped
        with probability 1/2 (brain age is ~symmetric; doubles the data). None: no flips.
    scale_std, noise_std : float
        Per-window gain N(1, scale_std); voxel noise N(0, noise_std) on non-zero voxels only
        (voxels outside a subject's brain stay exactly zero).

    Returns
    -------
    Tensor, shape (B, T, V), float32
    """
    batch = batch.float()
    b, device = batch.shape[0], batch.device
    if flip_index is not None:
        padded = torch.cat([batch, batch.new_zeros((*batch.shape[:2], 1))], dim=2)
        flipped = torch.rand(b, generator=generator, device=device) < 0.5
        batch = torch.where(flipped[:, None, None], padded[:, :, flip_index], batch)
    if scale_std:
        batch = batch * (1.0 + scale_std * torch.randn(b, 1, 1, generator=generator, device=device))
    if noise_std:
        noise = torch.randn(batch.shape, generator=generator, device=device)
        batch = batch + noise_std * noise * (batch != 0)
    return batch


class VolumeInputs:
    """Inputs of the volume models: the in-mask voxels of the training subjects' union mask.

    Inputs are :class:`brainage.storage.Volumes` or full grids ``(n_timepoints, x, y, z)``;
    fitting fixes the mask (``mask_``) and the Volumes' shared affine (``affine_``; None for
    bare grids), which the checkpoint keeps.
    """

    def _inputs(self, X, fitting: bool) -> list[np.ndarray]:
        items = list(X)
        grids = [a for a in items if not isinstance(a, Volumes)]
        if grids or not items:
            check_arrays(grids, self.input_kind, self.name)
        for v in items:
            if isinstance(v, Volumes) and v.data.shape[0] == 0:
                raise ValueError(f"{self.name}: subject {v.participant_id} has no time points")
        try:
            frames, mask = masked_frames(items, None if fitting else self.mask_)
        except ValueError as err:
            raise ValueError(f"{self.name}: {err}") from None
        if fitting:
            self.mask_, self.input_shape_ = mask, tuple(int(n) for n in mask.shape)
            try:
                self.affine_ = shared_affine(items)
            except ValueError as err:
                raise ValueError(f"{self.name}: {err}") from None
        return frames

    def input_state(self) -> dict:
        """The training mask (a bool tensor) and, when known, the grid's affine (float64)."""
        state = {"mask": torch.from_numpy(self.mask_.copy())}
        if getattr(self, "affine_", None) is not None:
            state["affine"] = torch.from_numpy(np.array(self.affine_, dtype=np.float64))
        return state

    def load_input_state(self, state: dict) -> None:
        """Restore the training mask and affine (None in checkpoints written without one)."""
        self.mask_ = state["mask"].numpy().astype(bool)
        self.affine_ = state["affine"].numpy() if "affine" in state else None


class CnnRnn(VolumeInputs, TorchAgeModel):
    """Brain age from downsampled fMRI frames: 3D CNN per frame, recurrent layer over frames.

    Trained on random ``window``-frame stretches with flips and jitter; a subject's prediction
    is the mean over non-overlapping windows tiling its whole run. Inputs are
    :class:`brainage.storage.Volumes` or full grids ``(n_timepoints, x, y, z)``; they are kept
    as the voxels of the training subjects' union mask (``mask_``). The Volumes' shared affine
    (``affine_``; None for bare grids, which then get no flips) places the flips' midline.
    """

    name = "cnn_rnn"
    input_kind = "volumes"
    Config = CnnRnnConfig

    def __init__(self, config: CnnRnnConfig = CnnRnnConfig(), seed: int = 0, device: str | None = None):
        super().__init__(config, seed, device)
        # A pretrained frame encoder file (brainage.pretrain) that fit starts from; None: random init.
        self.init_encoder = None

    def build_network(self, sample_shape: tuple[int, ...]) -> CnnRnnNet:
        """Return the network on the training mask's grid."""
        c = self.config
        net = CnnRnnNet(tuple(c.channels), c.hidden, c.rnn, c.dropout, self.mask_,
                        affine=getattr(self, "affine_", None))
        if self.init_encoder is not None:
            net.encoder.load_state_dict(self.load_encoder(self.init_encoder))
        return net.to(memory_format=torch.channels_last_3d)  # the conv weights, as the frames

    def load_encoder(self, path: str | os.PathLike) -> dict:
        """Read a pretrained frame encoder file and check it fits this model's ``channels``.

        Parameters
        ----------
        path : path
            ``encoder.pt`` of ``python -m brainage.pretrain encoder`` (loaded with
            ``weights_only=True``).

        Returns
        -------
        dict of str to Tensor
            The :class:`FrameEncoder` state_dict.

        Raises
        ------
        InputDataError
            The file is not an encoder file, or was pretrained with other channels.
        """
        state = read_torch(path)
        if not isinstance(state, dict) or not {"channels", "state_dict"} <= set(state):
            raise InputDataError(f"{path}: not a pretrained frame encoder file (expected the keys channels and state_dict)")
        if list(state["channels"]) != list(self.config.channels):
            raise InputDataError(
                f"{path}: encoder pretrained with channels {list(state['channels'])}, but {self.name} has "
                f"channels {list(self.config.channels)}; pretrain again with the model's channels"
            )
        logger.info("%s: frame encoder initialised from %s", self.name, path)
        return state["state_dict"]

    def augment(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Flips, gain and noise when ``augment``; see :func:`augment_volumes`."""
        if not self.config.augment:
            return batch
        return augment_volumes(batch, generator, self.network_.unmask.flip_index)
