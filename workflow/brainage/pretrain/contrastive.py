"""Self-supervised pretraining of the cnn_rnn frame encoder: SimCLR's NT-Xent loss over frames."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits
from torch import nn

from brainage import storage
from brainage.errors import ConfigError
from brainage.models.cnn_rnn import CnnRnnConfig, FrameEncoder, Unmask, augment_volumes
from brainage.torchloop.data import load_inputs, masked_frames, shared_affine
from brainage.train.fit import derive_seeds, read_design
from brainage.torchloop.loop import autocast, describe_device, set_determinism, software_versions

logger = logging.getLogger(__name__)

# The name this stage's seeds derive from (brainage.train.fit.derive_seeds takes a model name).
SEED_NAME = "pretrain_encoder"


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """The ``pretrain`` config section plus the encoder's ``channels``, with their defaults.

    config/config.yaml lists the same values (tested); the schema has types and ranges only.

    Attributes
    ----------
    channels : tuple of int
        ``models.cnn_rnn.channels``: the encoder must have the shape it is loaded into.
    epochs : int
        Passes over the training subjects (one pair of frames per subject and pass).
    batch_size : int
        Subjects per step (>= 2: each pair needs another subject's frames as negatives).
    lr, weight_decay : float
        AdamW learning rate and decoupled weight decay.
    temperature : float
        Softmax temperature of the NT-Xent loss.
    projection : int
        Width of the MLP projection head (discarded after pretraining).
    """

    channels: tuple[int, ...] = CnnRnnConfig.channels
    epochs: int = 100
    batch_size: int = 16
    lr: float = 0.001
    weight_decay: float = 0.0001
    temperature: float = 0.2
    projection: int = 64

    def __post_init__(self):
        if not self.channels or any(not isinstance(c, int) or c < 1 for c in self.channels):
            raise ConfigError(f"pretrain: channels must be a non-empty list of integers >= 1, got {self.channels!r}")
        for key, low in {"epochs": 1, "batch_size": 2, "projection": 1}.items():
            value = getattr(self, key)
            if not isinstance(value, int) or value < low:
                raise ConfigError(f"pretrain: {key} must be an integer >= {low}, got {value!r}")
        if not (self.lr > 0 and self.weight_decay >= 0 and self.temperature > 0):
            raise ConfigError(
                f"pretrain: need lr > 0, weight_decay >= 0 and temperature > 0, got lr={self.lr}, "
                f"weight_decay={self.weight_decay}, temperature={self.temperature}"
            )

    @classmethod
    def from_params(cls, params: dict) -> PretrainConfig:
        """Build from the rule's parameters; missing keys take the defaults above.

        Raises
        ------
        ConfigError
            An unknown key (the message lists the allowed ones) or a value out of range.
        """
        allowed = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            raise ConfigError(f"pretrain: unknown parameter(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in params.items()})

    def as_dict(self) -> dict:
        """Plain JSON values (for the card)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent (normalised temperature-scaled cross-entropy; Chen et al. 2020, SimCLR, arXiv:2002.05709).

    Each of the 2N embeddings is an anchor; its positive is the other view of the same
    subject, the other 2N - 2 embeddings are its negatives:
    ``l_i = -log(exp(s_ip / t) / sum_{k != i} exp(s_ik / t))`` with cosine similarities ``s``,
    averaged over all 2N anchors.

    Parameters
    ----------
    z1, z2 : Tensor, shape (N, P)
        Projections of the two views; row i of both is subject i.
    temperature : float

    Returns
    -------
    Tensor, scalar, float32
    """
    if z1.shape != z2.shape or z1.ndim != 2 or z1.shape[0] < 1:
        raise ValueError(f"NT-Xent needs two (N, P) views of the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)  # (2N, P), unit rows
    logits = z @ z.T / temperature  # (2N, 2N) cosine similarities / t
    # An anchor is not its own negative: drop the diagonal from the softmax.
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    positive = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(logits, positive)


class PairSampler:
    """Per pass: subjects shuffled into batches, two distinct random frames of each.

    Every subject is drawn once per pass. Batch sizes are near-equal (``np.array_split``), so
    no batch is left with a single subject (which would have no negatives).

    Parameters
    ----------
    lengths : sequence of int
        Frames per subject (a one-frame run pairs its frame with itself, augmented twice).
    batch_size : int
        At most this many subjects per batch.
    rng : numpy.random.Generator
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, rng: np.random.Generator):
        self.lengths = np.asarray(lengths, dtype=np.int64)
        if len(self.lengths) < 2 or np.any(self.lengths < 1):
            raise ValueError(f"contrastive pairs need at least 2 subjects with frames, got lengths {self.lengths.tolist()}")
        self.batch_size, self.rng = int(batch_size), rng

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    def __iter__(self) -> Iterator[np.ndarray]:
        """Yield int64 arrays of shape (b, 3): subject, first frame, second frame."""
        order = self.rng.permutation(len(self.lengths))
        n = self.lengths[order]
        first = self.rng.integers(0, n)
        # The second frame is uniform over the other frames: draw from n - 1, skip the first.
        second = self.rng.integers(0, np.maximum(n - 1, 1))
        second = np.where(n > 1, second + (second >= first), first)
        rows = np.stack([order, first, second], axis=1)
        yield from np.array_split(rows, len(self))


class ContrastiveNet(nn.Module):
    """Unmask -> FrameEncoder -> MLP projection head (Linear, ReLU, Linear; SimCLR's g).

    The loss is computed on the projections; the encoder's output (before the head) is what
    is kept, as SimCLR found it the better representation for downstream tasks.

    Parameters
    ----------
    channels : sequence of int
    projection : int
        Width of both head layers.
    mask : ndarray of bool, shape (X, Y, Z)
    affine : ndarray, shape (4, 4), optional
        The grid's affine: flips mirror about world x = 0 (None: no flips; see :class:`Unmask`).
    """

    def __init__(self, channels: tuple[int, ...], projection: int, mask: np.ndarray, affine: np.ndarray | None = None):
        super().__init__()
        self.unmask = Unmask(mask, affine=affine)
        self.encoder = FrameEncoder(channels)
        self.head = nn.Sequential(
            nn.Linear(self.encoder.out_features, projection), nn.ReLU(), nn.Linear(projection, projection)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map frames ``(N, V)`` of in-mask voxels to projections ``(N, P)``."""
        return self.head(self.encoder(self.unmask(x)))  # (N, V) -> (N, 1, X, Y, Z) -> (N, E) -> (N, P)


def train_encoder(
    frames: list[np.ndarray], mask: np.ndarray, config: PretrainConfig, *, seed: int, device: torch.device,
    affine: np.ndarray | None = None,
) -> tuple[dict[str, torch.Tensor], list[float]]:
    """Pretrain a frame encoder on unlabelled frames with the NT-Xent loss.

    A positive pair is two frames of one subject at two random time points, each
    independently augmented (:func:`brainage.models.cnn_rnn.augment_volumes`: left-right flip
    about world x = 0, gain, voxel noise); the frames of the other subjects in the batch are the negatives, so
    the encoder learns what stays constant within a subject and differs between subjects.

    Parameters
    ----------
    frames : list of ndarray, each (n_timepoints, V), float16 or float32
        In-mask voxels of every training subject (:func:`brainage.torchloop.data.masked_frames`).
    mask : ndarray of bool, shape (X, Y, Z)
    config : PretrainConfig
    seed : int
        Seeds the weights, the pairs and the augmentation.
    device : torch.device
        bfloat16 autocast on CUDA (:func:`brainage.torchloop.loop.autocast`), float32 on CPU.
    affine : ndarray, shape (4, 4), optional
        The grid's voxel-to-world affine (the midline of the flips); None: no flips.

    Returns
    -------
    state_dict : dict of str to Tensor
        The :class:`FrameEncoder`'s weights and batch-norm statistics, on the CPU.
    losses : list of float
        Mean NT-Xent loss of each pass.
    """
    torch.manual_seed(seed)  # weight initialisation
    net = ContrastiveNet(tuple(config.channels), config.projection, mask, affine)
    # Channels-last conv weights, as Unmask lays out the frames (and as CnnRnn builds its network).
    net = net.to(device, memory_format=torch.channels_last_3d)
    optimiser = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sampler = PairSampler([f.shape[0] for f in frames], config.batch_size, np.random.default_rng(seed))
    generator = torch.Generator(device=device).manual_seed(seed)
    net.train()
    losses = []
    for epoch in range(1, config.epochs + 1):
        start, total = time.perf_counter(), 0.0
        for batch in sampler:
            loss = _step(net, optimiser, frames, batch, generator, config.temperature, device)
            total += loss * len(batch)
        losses.append(total / len(frames))
        logger.info("epoch %d/%d: NT-Xent %.4f (%.1f s)", epoch, config.epochs, losses[-1], time.perf_counter() - start)
    return {k: v.detach().cpu().clone() for k, v in net.encoder.state_dict().items()}, losses


def _step(net, optimiser, frames, batch, generator, temperature, device) -> float:
    # batch: (b, 3) subject, first frame, second frame.
    views = np.stack([np.stack([frames[s][t] for s, t in zip(batch[:, 0], batch[:, k])]) for k in (1, 2)])
    x = torch.from_numpy(views).to(device)  # (2, b, V)
    b, v = x.shape[1:]
    # Each of the 2b frames is its own one-frame "window": flip, gain and noise drawn independently.
    x = augment_volumes(x.reshape(2 * b, 1, v), generator, net.unmask.flip_index).reshape(2 * b, v)
    optimiser.zero_grad(set_to_none=True)
    with autocast(device, True):
        z = net(x)  # (2b, V) -> (2b, P)
    loss = nt_xent_loss(z[:b].float(), z[b:].float(), temperature)
    loss.backward()
    optimiser.step()
    return float(loss.detach())


def pretrain_encoder(
    fold: int,
    cohort: str | os.PathLike,
    splits: str | os.PathLike,
    inputs: Sequence[str | os.PathLike],
    params: dict,
    seed: int,
    threads: int,
    out: str | os.PathLike,
) -> dict:
    """Pretrain the cnn_rnn frame encoder on the training subjects of outer fold ``fold``.

    Only the subjects ``train_model`` trains on for this fold are read: cross-validation
    subjects outside fold ``fold`` (never the fold's test subjects, never the held-out
    ``set == "test"`` subjects). No ages are used.

    Parameters
    ----------
    fold : int
        Outer test fold.
    cohort, splits : path
        ``cohort.parquet`` and ``splits.tsv`` (see :func:`brainage.train.fit.read_design`).
    inputs : sequence of path
        Volume files of any subjects (matched on their participant_id metadata).
    params : dict
        ``{"channels": models.cnn_rnn.channels, **pretrain}`` (:class:`PretrainConfig`).
    seed : int
        The config seed; the stage's seeds derive from it with the fold.
    threads : int
        CPU threads for torch and the BLAS/OpenMP pools.
    out : path
        ``encoder.pt``, loadable with ``torch.load(..., weights_only=True)``: ``channels``
        (list), ``state_dict`` (FrameEncoder, CPU tensors) and ``card``; ``card.json`` is
        written beside it.

    Returns
    -------
    dict
        The card: fold, n_subjects, subjects, epochs, loss (per epoch), seeds, params, device,
        versions, seconds, sources.
    """
    config = PretrainConfig.from_params(params)
    seeds = derive_seeds(seed, fold, SEED_NAME)
    design = read_design(cohort, splits, fold)
    ids = design.loc[design["train"], "participant_id"].astype(str).tolist()
    volumes, sources = load_inputs(inputs, ids, "volumes")
    frames, mask = masked_frames(volumes)
    affine = shared_affine(volumes)
    del volumes
    set_determinism(seeds["model"], threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    logger.info("fold %d: pretraining the frame encoder on %d subjects (%s)", fold, len(ids), device)
    start = time.perf_counter()
    with threadpool_limits(limits=threads):
        state, losses = train_encoder(frames, mask, config, seed=seeds["model"], device=device, affine=affine)
    card = {
        "fold": int(fold),
        "n_subjects": len(ids),
        "subjects": ids,
        "epochs": config.epochs,
        "loss": [round(float(x), 6) for x in losses],
        "seeds": seeds,
        "params": config.as_dict(),
        "device": describe_device(device),
        "versions": software_versions(),
        "seconds": round(time.perf_counter() - start, 3),
        "sources": sources,
    }
    with storage.atomic_path(out) as tmp:
        torch.save({"channels": list(config.channels), "state_dict": state, "card": card}, tmp)
    storage.write_json(os.path.join(os.path.dirname(os.fspath(out)), "card.json"), card)
    logger.info("fold %d: NT-Xent %.4f -> %.4f in %.1f s", fold, losses[0], losses[-1], card["seconds"])
    return card
