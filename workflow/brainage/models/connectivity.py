"""The connectivity reader: a GRU over a whole run, correlation pooling, a log map and a ridge-started head.

Age in resting-state fMRI lives in the correlation structure between regions over minutes of scan
(Dadi et al. 2019, NeuroImage 192:115; He et al. 2020, NeuroImage 206:116276), which a network
reading short windows of a few summary signals cannot hold. This reader takes per-frame regional
signals ``u`` (ROI means, or a CNN's soft parcellation of a volume) of a whole run and

1. adds a recurrent correction, ``z_t = u_t + A h_t`` with ``h = GRU(u)``; ``A`` starts at zero, so
   at initialisation ``z`` is ``u`` (the GRU stays in the path and learns temporal filtering);
2. pools the run into the correlation matrix of ``z`` over its real frames (padding and dropped
   frames excluded), shrinks it towards the identity, ``S = (1 - s) R + s I``, and maps it to
   the tangent space at the identity, ``log(S)`` (log-Euclidean; Arsigny et al. 2007, SIAM J
   Matrix Anal Appl 29:328). Shrinkage makes ``S`` full rank when a run has fewer frames than
   regions, and the log map turns correlation matrices into a vector space where a linear head
   suits them (on ABIDE cc200 a ridge on ``log(S)`` with s = 0.6 reads age better than one on ``R``:
   ``bench/results.md``);
3. standardises the upper triangle of ``log(S)`` (diagonal included; off-diagonal entries times
   sqrt 2, so the Euclidean norm of the vector is the Frobenius norm of the matrix) with fixed
   training statistics, and reads age with a linear head.

The head is never trained by gradient steps: :func:`fit_head` sets it in closed form (ridge,
penalty by leave-one-out) on the training subjects' features, before training (so training
starts where a connectome ridge stands) and again before every validation. A ridge on ~20 000
features of a few hundred subjects fits them almost exactly, so a gradient-trained head would leave
the rest of the network nothing to learn from. Training instead scores each batch by the
leave-one-out error of a ridge fitted on the batch itself (:func:`batch_loo_ridge`, exact and
differentiable; in the spirit of Bertinetto et al. 2019, ICLR, "closed-form solvers"): the mix of
the regions and the GRU learn features on which a ridge generalises across subjects.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from sklearn.linear_model import RidgeCV
from torch import nn

from brainage.errors import ConfigError
from brainage.models._torch import TorchAgeModel, TorchConfig

# Eigenvalues closer than this (relative) use the derivative of log instead of the divided
# difference in the backward pass of :class:`SymmetricLog`.
_CLOSE = 1e-6


class SymmetricLog(torch.autograd.Function):
    """Matrix logarithm of symmetric positive definite matrices, with a stable gradient.

    ``torch.linalg.eigh``'s own backward divides by eigenvalue gaps and returns inf or NaN when
    eigenvalues repeat, which shrinkage of a rank-deficient correlation matrix guarantees (every
    zero eigenvalue becomes ``s``). The Daleckii-Krein formula needs only the divided
    differences of log, whose limit at equal eigenvalues is ``1 / w`` (Higham 2008, Functions of
    Matrices, thm. 3.11).
    """

    @staticmethod
    def forward(ctx, spd: torch.Tensor) -> torch.Tensor:
        w, v = torch.linalg.eigh(spd)
        w = w.clamp_min(torch.finfo(w.dtype).tiny)
        ctx.save_for_backward(w, v)
        return (v * w.log().unsqueeze(-2)) @ v.transpose(-1, -2)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        w, v = ctx.saved_tensors
        wi, wj = w.unsqueeze(-1), w.unsqueeze(-2)
        gap = wi - wj
        close = gap.abs() <= _CLOSE * torch.maximum(wi, wj)
        divided = torch.where(close, 1.0 / wi, (wi.log() - wj.log()) / torch.where(close, torch.ones_like(gap), gap))
        inner = v.transpose(-1, -2) @ (0.5 * (grad + grad.transpose(-1, -2))) @ v
        return v @ (inner * divided) @ v.transpose(-1, -2)


def frame_mask(x: torch.Tensor) -> torch.Tensor:
    """Real frames of a batch ``(B, T, ...)``: ``(B, T)`` float, 0 where a frame is all zeros.

    Runs shorter than the batch are left-padded with zero frames (``pad_left``) and training
    drops frames by zeroing them (``frame_dropout``); a real frame of z-scored signals is never
    zero everywhere.
    """
    return (x.flatten(2) != 0).any(-1).to(x.dtype)


def masked_correlation(z: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Pearson correlation between the channels of ``z`` over the frames where ``mask`` is 1.

    Parameters
    ----------
    z : Tensor, shape (B, T, K)
    mask : Tensor, shape (B, T)
        1 for frames to use, 0 for padding and dropped frames.
    eps : float
        Added to each channel's variance (a constant channel gets correlation 0 with the others).

    Returns
    -------
    Tensor, shape (B, K, K)
        Ones on the diagonal.
    """
    m = mask.unsqueeze(-1)
    n = m.sum(1, keepdim=True).clamp_min(2.0)  # (B, 1, 1)
    centred = (z - (z * m).sum(1, keepdim=True) / n) * m
    cov = centred.transpose(1, 2) @ centred / (n - 1)
    scale = (torch.diagonal(cov, dim1=-2, dim2=-1) + eps).rsqrt()
    corr = cov * scale.unsqueeze(-1) * scale.unsqueeze(-2)
    eye = torch.eye(z.shape[-1], dtype=z.dtype, device=z.device)
    return corr * (1 - eye) + eye


def tangent_vector(matrix: torch.Tensor) -> torch.Tensor:
    """Upper triangle (diagonal included) of symmetric ``(B, K, K)`` as ``(B, K (K + 1) / 2)``.

    Off-diagonal entries are multiplied by sqrt 2, so the vector's norm is the matrix's Frobenius norm.
    """
    k = matrix.shape[-1]
    rows, cols = torch.triu_indices(k, k, device=matrix.device)
    weight = torch.full(rows.shape, 2.0**0.5, dtype=matrix.dtype, device=matrix.device)
    weight[rows == cols] = 1.0
    return matrix[..., rows, cols] * weight


class ConnectivityReader(nn.Module):
    """Per-frame regional signals of a run ``(B, T, K)`` -> z-scored age ``(B,)``.

    Parameters
    ----------
    n_signals : int
        K, the regional signals per frame.
    hidden : int
        Units of the GRU whose projected output corrects the signals.
    shrinkage : float
        ``s`` in ``(1 - s) R + s I``, in (0, 1].
    dropout : float
        Dropout on the standardised features before the head.
    """

    def __init__(self, n_signals: int, hidden: int, shrinkage: float, dropout: float):
        super().__init__()
        self.shrinkage = float(shrinkage)
        self.rnn = nn.GRU(n_signals, hidden, batch_first=True)
        self.correct = nn.Linear(hidden, n_signals, bias=False)
        nn.init.zeros_(self.correct.weight)  # z = u at initialisation
        n_features = n_signals * (n_signals + 1) // 2
        # Feature standardisation, set by fit_head (training statistics), not trained.
        self.register_buffer("feature_mean", torch.zeros(n_features))
        self.register_buffer("feature_scale", torch.ones(n_features))
        self.register_buffer("alpha", torch.ones(()))  # the head's ridge penalty, also used in training
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(n_features, 1)
        self.head.requires_grad_(False)  # set in closed form by fit_head, never by the optimiser

    def features(self, u: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The run's tangent-space connectivity vector ``(B, K (K + 1) / 2)``, before standardisation."""
        h, _ = self.rnn(u)
        z = u + self.correct(h)
        # float32 eigendecomposition whatever the autocast (bfloat16 eigh is neither available nor accurate).
        with torch.autocast(z.device.type, enabled=False):
            corr = masked_correlation(z.float(), mask.float())
            eye = torch.eye(corr.shape[-1], dtype=corr.dtype, device=corr.device)
            spd = (1 - self.shrinkage) * corr + self.shrinkage * eye
            return tangent_vector(SymmetricLog.apply(spd))

    def forward(self, u: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Map signals ``(B, T, K)`` and the frame mask ``(B, T)`` to z-scored ages ``(B,)``.

        With ``targets`` (training), each subject's age is predicted by a ridge fitted on the
        other subjects of the batch (:func:`batch_loo_ridge`) instead of by the head.
        """
        standard = self.dropout((self.features(u, mask) - self.feature_mean) / self.feature_scale)
        if targets is None:
            return self.head(standard).squeeze(-1)
        return batch_loo_ridge(standard, targets, self.alpha)


def batch_loo_ridge(features: torch.Tensor, targets: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Leave-one-out predictions of a ridge (with intercept) fitted on a batch, differentiable.

    Kernel form: with centred features ``Fc`` and ``K = Fc Fc^T``, the hat matrix is
    ``H = J / n + K (K + alpha I)^-1 C`` (``J`` all ones, ``C = I - J / n``), and subject i's
    leave-one-out prediction is ``y_i - (y_i - (H y)_i) / (1 - H_ii)`` (exact for penalised least
    squares; Hastie et al. 2009, Elements of Statistical Learning, eq. 7.52 generalised).

    Parameters
    ----------
    features : Tensor, shape (B, F)
    targets : Tensor, shape (B,)
    alpha : Tensor, scalar
        Ridge penalty (as scikit-learn's ``Ridge(alpha)`` on the same features).

    Returns
    -------
    Tensor, shape (B,)
    """
    n = features.shape[0]
    centred = (features - features.mean(0)).double()
    kernel = centred @ centred.T
    eye = torch.eye(n, dtype=kernel.dtype, device=kernel.device)
    centring = eye - 1.0 / n
    hat = 1.0 / n + torch.linalg.solve(kernel + alpha.double() * eye, kernel).T @ centring
    y = targets.double()
    residual = y - hat @ y
    return (y - residual / (1 - torch.diagonal(hat)).clamp_min(1e-6)).to(features.dtype)


@torch.no_grad()
def fit_head(reader: ConnectivityReader, features: torch.Tensor, targets: np.ndarray, alphas) -> float:
    """Set the reader's standardisation and head to a ridge fitted on the training subjects' features.

    Parameters
    ----------
    reader : ConnectivityReader
    features : Tensor, shape (n_subjects, n_features)
        :meth:`ConnectivityReader.features` of the training subjects under the current weights.
    targets : ndarray, shape (n_subjects,)
        The network's training targets (z-scored age or log age).
    alphas : sequence of float
        Ridge penalties; RidgeCV chooses one by efficient leave-one-out on these subjects.

    Returns
    -------
    float
        The chosen penalty.
    """
    x = features.double().cpu().numpy()
    mean = x.mean(0)
    scale = x.std(0)
    scale[scale == 0] = 1.0  # constant features (e.g. an empty region) stay at 0 after centring
    ridge = RidgeCV(alphas=np.asarray(alphas, dtype=float)).fit((x - mean) / scale, targets)
    device = reader.head.weight.device
    reader.feature_mean.copy_(torch.as_tensor(mean, dtype=torch.float32, device=device))
    reader.feature_scale.copy_(torch.as_tensor(scale, dtype=torch.float32, device=device))
    reader.head.weight.copy_(torch.as_tensor(ridge.coef_[None, :], dtype=torch.float32, device=device))
    reader.head.bias.fill_(float(ridge.intercept_))
    reader.alpha.fill_(float(ridge.alpha_))
    return float(ridge.alpha_)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConnectivityConfig(TorchConfig):
    """Parameters shared by the models that end in a :class:`ConnectivityReader` (roi_conn, cnn_conn).

    Attributes
    ----------
    hidden : int
        Units of the GRU that corrects the regional signals (:class:`ConnectivityReader`).
    window : int
        Most frames read in one pass: training and test read whole runs up to this length (the
        longest training run, if shorter); longer runs are read in windows whose predictions
        are averaged.
    epochs : int
        Maximum epochs; 0 keeps the closed-form start (a ridge on the log-correlation of the
        initial regional signals): the ablation that shows what training adds.
    shrinkage : float
        Weight of the identity in the shrunk correlation matrix, in (0, 1].
    frame_dropout : float
        Probability that a training frame is left out of a pass (augmentation), in [0, 0.9].
    alphas : tuple of float
        Ridge penalties for the head's closed-form fit (chosen by leave-one-out).
    batch_size, lr, weight_decay, dropout, patience, target
        See :class:`~brainage.models._torch.TorchConfig`; a batch needs a few dozen subjects
        for the in-batch ridge that training scores.
    """

    hidden: int = 32
    window: int = 1200
    epochs: int = 30
    batch_size: int = 32
    lr: float = 0.001
    weight_decay: float = 0.0001
    dropout: float = 0.0
    patience: int = 8
    shrinkage: float = 0.75
    frame_dropout: float = 0.1
    alphas: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0, 100000.0)
    _min_epochs = 0

    def __post_init__(self):
        super().__post_init__()
        name = self._model_name
        if not 0 < self.shrinkage <= 1:
            raise ConfigError(f"{name}: shrinkage must be in (0, 1], got {self.shrinkage!r}")
        if not 0 <= self.frame_dropout <= 0.9:
            raise ConfigError(f"{name}: frame_dropout must be in [0, 0.9], got {self.frame_dropout!r}")
        if not self.alphas or any(a <= 0 for a in self.alphas):
            raise ConfigError(f"{name}: alphas must be a non-empty list of positive numbers, got {self.alphas}")

    _model_name = "connectivity model"


class ConnectivityAgeModel(TorchAgeModel):
    """Base of the models whose network ends in a :class:`ConnectivityReader`.

    The network has ``signals(x) -> (u, mask)`` (per-frame regional signals of whole runs and
    their real frames) and ``reader``. It starts as a ridge on the log-correlation of its
    initial signals, fitted on the training subjects (:meth:`prepare`), and is then trained end
    to end; early stopping scores the start too, so the inner validation subjects decide
    whether training improved on it.
    """

    validate_start = True

    def frames_per_pass(self, lengths: list[int]) -> int:
        """Whole training runs, up to ``window`` frames."""
        return min(self.config.window, max(lengths))

    def prepare(self, net: nn.Module, arrays: list[np.ndarray], targets: np.ndarray) -> dict:
        """Fit the head as a ridge on the training subjects' features (each run read whole, in eval mode)."""
        was_training = net.training
        net.eval()
        with torch.no_grad():
            features = torch.cat([
                net.reader.features(*net.signals(torch.from_numpy(a).float().to(self.device_).unsqueeze(0)))
                for a in arrays
            ])
        net.train(was_training)
        return {"head_alpha": fit_head(net.reader, features, targets, self.config.alphas)}

    def augment(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Drop each frame with probability ``frame_dropout`` (a dropped frame is zeroed: masked out)."""
        if self.config.frame_dropout == 0:
            return batch
        keep = torch.rand(batch.shape[:2], generator=generator, device=batch.device) >= self.config.frame_dropout
        return batch * keep.view(*keep.shape, *[1] * (batch.dim() - 2)).to(batch.dtype)
