"""The demo's signal model: age-dependent network coupling, local coherence, motion, physiology and site effects.

Every quantity below is in percent signal change of the voxel baseline unless stated; see
:mod:`brainage.demo.generate` for the full model description.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from brainage.demo.grid import LOCAL_EFFECT_NETWORKS, NETWORKS, NODES, DemoGrid

#: Band (Hz) of the neural signals: the resting-state band (Biswal et al. 1995, MRM 34:537).
NEURAL_BAND_HZ = (0.01, 0.1)
#: Local coherence of the control network's nodes (no age effect).
LOCAL_CONTROL = 0.5
#: Intensity factor of the first volume, acquired before T1 steady state.
DUMMY_FACTOR = 1.3
#: Amplitudes (% signal change) of the model terms.
NODE_AMPLITUDE, BACKGROUND_AMPLITUDE = 1.6, 0.8
WM_PHYSIO_AMPLITUDE, CSF_PHYSIO_AMPLITUDE = 0.8, 1.5
DRIFT_AMPLITUDE = 0.5
#: Independent movements behind the six rigid-body motion parameters.
MOTION_RANK = 2


@dataclass(frozen=True)
class Coupling:
    """Age-dependent mixing weights of one subject (variance shares in [0, 1]).

    Attributes
    ----------
    network : float
        Share of a node's signal that is its network's latent signal.
    shared : float
        Share of a node's signal that is one latent signal common to all networks: the
        correlation of two nodes of different networks. Two nodes of one network correlate
        ``network + shared``.
    local : float
        Share of a node voxel's neural variance that is its node's signal (local coherence),
        in the nodes of :data:`~brainage.demo.grid.LOCAL_EFFECT_NETWORKS`.
    """

    network: float
    shared: float
    local: float


@dataclass(frozen=True)
class Site:
    """Acquisition-site effects (independent of age).

    Attributes
    ----------
    label : str
        Site label.
    scale, offset : float
        Multiplicative intensity scale and additive intensity offset (image units).
    noise_sd : float
        White-noise standard deviation (% of baseline).
    motion : float
        Factor on every subject's motion amplitude.
    pattern : ndarray of float32, shape (n_voxels,)
        Smooth static spatial intensity pattern (unit standard deviation).
    """

    label: str
    scale: float
    offset: float
    noise_sd: float
    motion: float
    pattern: np.ndarray


@dataclass(frozen=True)
class SimulatedRun:
    """One subject's generated run.

    Attributes
    ----------
    bold : ndarray of float32, shape (n_timepoints, n_voxels)
        BOLD intensities of the in-mask voxels (mean ~1000).
    motion : ndarray of float64, shape (n_timepoints, 6)
        ``trans_x, trans_y, trans_z`` (mm) and ``rot_x, rot_y, rot_z`` (rad).
    spikes : ndarray of int, shape (n_spikes,)
        Frames with a sudden head movement and spin-history intensity jump.
    n_dummy : int
        Leading non-steady-state volumes.
    """

    bold: np.ndarray
    motion: np.ndarray
    spikes: np.ndarray
    n_dummy: int


def age_coupling(age: float, age_min: float, age_max: float) -> Coupling:
    """Mixing weights at ``age``: linear in age over ``[age_min, age_max]``.

    With ``a`` the age scaled to [0, 1]: within-network correlation ``0.9 - 0.4 a`` falls and
    between-network correlation ``0.02 + 0.38 a`` rises, the dedifferentiation of brain
    systems in ageing (Chan et al. 2014, PNAS 111:E4997; Damoiseaux 2017, NeuroImage
    160:32); local coherence ``0.8 - 0.65 a`` falls, as regional homogeneity does
    (Wu et al. 2007, Neurosci Lett 423:189).
    """
    a = 0.5 if age_max <= age_min else float(np.clip((age - age_min) / (age_max - age_min), 0.0, 1.0))
    return Coupling(network=0.88 - 0.78 * a, shared=0.02 + 0.38 * a, local=0.8 - 0.65 * a)


def band_limited(
    rng: np.random.Generator,
    n_series: int,
    n_timepoints: int,
    tr: float,
    band: tuple[float, float],
    orthogonal: bool = False,
) -> np.ndarray:
    """Independent random signals with a flat spectrum inside ``band``.

    Parameters
    ----------
    rng : numpy.random.Generator
    n_series, n_timepoints : int
    tr : float
        Sampling interval (s).
    band : (float, float)
        Pass band (Hz). A run too short to resolve it gets its lowest non-zero frequency
        instead; the constant and the Nyquist frequency are never used.
    orthogonal : bool
        Make the series exactly uncorrelated in the sample (when the band holds at least
        ``n_series`` dimensions), so that mixtures of them have exactly the planted
        correlations instead of ones blurred by sampling error.

    Returns
    -------
    ndarray of float32, shape (n_series, n_timepoints)
        Each row with zero mean and unit sample variance.
    """
    freqs = np.fft.rfftfreq(n_timepoints, d=tr)
    keep = (freqs >= band[0]) & (freqs <= band[1])
    keep[0] = False  # no constant
    if not keep.any():
        keep[1] = True
    if n_timepoints % 2 == 0:
        keep[-1] = False  # the Nyquist bin is real-valued; leaving it out keeps every bin alike
    bins = np.flatnonzero(keep)
    # Draw only the kept bins: most of the spectrum is zero and drawing it dominated the cost.
    coef = rng.standard_normal((n_series, 2 * bins.size), dtype=np.float32)
    if orthogonal and n_series <= 2 * bins.size:
        # Parseval: time-domain inner products are those of the (real, imaginary) coefficients.
        coef = np.ascontiguousarray(np.linalg.qr(coef.T.astype(np.float64))[0].T, dtype=np.float32)
    coef = coef.view(np.complex64)
    spectrum = np.zeros((n_series, freqs.size), dtype=np.complex64)
    spectrum[:, bins] = coef
    # Parseval: a real signal with these rfft bins (no DC, no Nyquist) has zero mean and
    # variance 2 sum |c_k|^2 / n^2, so each series is scaled to unit variance in the spectrum.
    power = 2.0 * (np.abs(coef) ** 2).sum(axis=1, keepdims=True) / n_timepoints**2
    spectrum /= np.sqrt(power)
    return np.fft.irfft(spectrum, n=n_timepoints, axis=-1).astype(np.float32)


def node_signals(rng: np.random.Generator, coupling: Coupling, n_timepoints: int, tr: float) -> np.ndarray:
    """Latent signal of every node in :data:`~brainage.demo.grid.NODES`.

    ``s_i = sqrt(network) z_n(i) + sqrt(shared) g + sqrt(1 - network - shared) u_i`` with
    ``g``, ``z_n`` and ``u_i`` band-limited signals, exactly uncorrelated in the sample.

    Returns
    -------
    ndarray of float32, shape (n_nodes, n_timepoints)
        Unit-variance node signals.
    """
    basis = band_limited(rng, 1 + len(NETWORKS) + len(NODES), n_timepoints, tr, NEURAL_BAND_HZ, orthogonal=True)
    shared, networks, unique = basis[:1], basis[1 : 1 + len(NETWORKS)], basis[1 + len(NETWORKS) :]
    member = np.array([network for _, network, _ in NODES])
    rest = max(1.0 - coupling.network - coupling.shared, 0.0)
    return np.sqrt(coupling.network) * networks[member] + np.sqrt(coupling.shared) * shared + np.sqrt(rest) * unique


def neural_signal(
    rng: np.random.Generator, grid: DemoGrid, coupling: Coupling, n_timepoints: int, tr: float
) -> np.ndarray:
    """Neural fluctuations of every voxel (% signal change), shape (n_timepoints, n_voxels).

    A node voxel is ``sqrt(p) s_i + sqrt(1 - p) e_v`` with ``p`` the local coherence and
    ``e_v`` its own signal; any other voxel is ``sqrt(0.7) f_v + sqrt(0.3) e_v`` with ``f``
    a smooth field (blobs of :attr:`DemoGrid.blobs` with independent signals). Amplitudes
    are larger in nodes and scale with the grey matter fraction.
    """
    nodes = node_signals(rng, coupling, n_timepoints, tr)
    voxel = band_limited(rng, grid.n_voxels, n_timepoints, tr, NEURAL_BAND_HZ)
    in_node = grid.node >= 0
    effect_nodes = np.isin([network for _, network, _ in NODES], LOCAL_EFFECT_NETWORKS)
    p = np.where(effect_nodes, coupling.local, LOCAL_CONTROL)[grid.node[in_node]][:, None]
    voxel[in_node] = np.sqrt(p) * nodes[grid.node[in_node]] + np.sqrt(1.0 - p) * voxel[in_node]
    blob_signals = band_limited(rng, grid.blobs.shape[1], n_timepoints, tr, NEURAL_BAND_HZ)
    field = grid.blobs[np.flatnonzero(~in_node)] @ blob_signals
    voxel[~in_node] = np.sqrt(0.7) * field + np.sqrt(0.3) * voxel[~in_node]
    amplitude = np.where(in_node, NODE_AMPLITUDE, BACKGROUND_AMPLITUDE).astype(np.float32) * (0.3 + 0.7 * grid.gm)
    return (voxel * amplitude[:, None]).T


def make_sites(labels: list[str], grid: DemoGrid, seed: int) -> list[Site]:
    """Site effects, evenly spread over fixed ranges so that every pair of sites differs.

    Returns
    -------
    list of Site
        One per label, in order.
    """
    rng = np.random.default_rng([seed, 1])
    spread = np.linspace(-1.0, 1.0, len(labels)) if len(labels) > 1 else np.zeros(1)
    # Scale and offset share one order so that sites differ clearly in mean intensity.
    intensity, noise, motion = (rng.permutation(spread) for _ in range(3))
    sites = []
    for k, label in enumerate(labels):
        field = ndimage.gaussian_filter(rng.standard_normal(grid.mask.shape), sigma=20.0 / grid.voxel_size)
        pattern = field[grid.mask]
        pattern = (pattern - pattern.mean()) / pattern.std()
        sites.append(
            Site(
                label=label,
                scale=1.0 + 0.12 * intensity[k],
                offset=60.0 * intensity[k],
                noise_sd=1.0 + 0.3 * noise[k],
                motion=float(np.exp(0.35 * motion[k])),
                pattern=pattern.astype(np.float32),
            )
        )
    return sites


def baseline(grid: DemoGrid, site: Site, subject_scale: float) -> np.ndarray:
    """Mean image (n_voxels,) float32: EPI tissue contrast (CSF brightest) with site scale, pattern, offset."""
    tissue = 1.0 * grid.gm + 0.85 * grid.wm + 1.3 * grid.csf
    tissue = tissue / tissue.mean()
    image = 1000.0 * site.scale * subject_scale * tissue * (1.0 + 0.04 * site.pattern) + site.offset
    return image.astype(np.float32)


def motion_parameters(rng: np.random.Generator, n_timepoints: int, amplitude: float) -> tuple[np.ndarray, np.ndarray]:
    """Rigid-body head motion: two smooth random-walk movements plus a few single-frame spikes.

    Head motion in the scanner is dominated by a few coupled movements (nodding couples
    pitch with y/z translation), so the six parameters are strongly correlated. Here they
    mix ``MOTION_RANK`` latent random walks; this also keeps the 24 motion regressors of a
    denoiser from spanning most of the ~35 dimensions of the 0.01-0.1 Hz band in a 100-frame
    run, which would leave too little signal to estimate connectivity from.

    Parameters
    ----------
    rng : numpy.random.Generator
    n_timepoints : int
    amplitude : float
        Factor on the step sizes (about 0.03 mm and 0.0004 rad per frame at 1).

    Returns
    -------
    motion : ndarray of float64, shape (n_timepoints, 6)
        Translations (mm) then rotations (rad) about x, y, z, as fMRIPrep reports them.
    spikes : ndarray of int, shape (n_spikes,)
        Spike frames (1 to 3 per 100 frames, never in the first two).
    """
    steps = ndimage.gaussian_filter1d(rng.standard_normal((n_timepoints, MOTION_RANK)), sigma=1.0, axis=0)
    mixing = rng.standard_normal((MOTION_RANK, 6)) / np.sqrt(MOTION_RANK) * np.array([0.03] * 3 + [0.0004] * 3)
    motion = np.cumsum(steps * 1.6, axis=0) @ mixing * amplitude
    motion -= motion.mean(axis=0)
    max_spikes = max(1, round(n_timepoints / 35))
    n_spikes = int(rng.integers(1, max_spikes + 1))
    spikes = np.sort(rng.choice(np.arange(2, n_timepoints - 1), size=n_spikes, replace=False))
    direction = rng.standard_normal((n_spikes, 3))
    jump = direction / np.linalg.norm(direction, axis=1, keepdims=True) * rng.uniform(0.5, 1.2, (n_spikes, 1))
    motion[spikes, :3] += jump
    motion[spikes, 3:] += rng.normal(0.0, 0.004, (n_spikes, 3))
    return motion, spikes


def motion_weights(grid: DemoGrid, image: np.ndarray) -> np.ndarray:
    """Linear motion artefact model: ``-grad(B) . d`` for a small rigid displacement ``d``.

    A voxel displaced by ``d = t + w x r`` (translation ``t``, small rotation ``w`` about the
    brain centre, ``r`` the voxel position) samples ``B(x + d) - B(x) ~ grad(B) . d``, which is
    large where the image changes fast: the brain edge and the ventricles (Friston et al.
    1996, MRM 35:346).

    Returns
    -------
    ndarray of float32, shape (6, n_voxels)
        Intensity change per mm of translation and per radian of rotation.
    """
    volume = grid.to_volume(image)
    gradient = np.stack(np.gradient(volume, grid.voxel_size), axis=-1)[grid.mask]  # (n_voxels, 3)
    position = grid.coords - grid.coords.mean(axis=0)
    return -np.concatenate([gradient, np.cross(position, gradient)], axis=1).T.astype(np.float32)


def simulate_run(
    rng: np.random.Generator,
    grid: DemoGrid,
    site: Site,
    coupling: Coupling,
    n_timepoints: int,
    tr: float,
) -> SimulatedRun:
    """Generate one subject's BOLD run on ``grid``.

    ``Y = B (1 + X / 100) - grad(B) . d + spin-history jumps``, with ``X`` the sum of neural
    signal, WM and CSF physiological signals, drift and white noise (percent), ``B`` the
    baseline, ``d`` the head displacement; the first volume is brighter (non-steady state).

    Returns
    -------
    SimulatedRun
    """
    subject_scale = float(np.exp(rng.normal(0.0, 0.03)))
    image = baseline(grid, site, subject_scale)
    signal = neural_signal(rng, grid, coupling, n_timepoints, tr)
    # Cardiac and respiratory fluctuations alias over the whole spectrum; they dominate in
    # white matter and CSF but reach every voxel (Birn 2012, NeuroImage 62:864).
    physio = band_limited(rng, 2, n_timepoints, tr, (0.01, 0.5 / tr))
    signal += np.outer(physio[0], WM_PHYSIO_AMPLITUDE * (0.3 + grid.wm))
    signal += np.outer(physio[1], CSF_PHYSIO_AMPLITUDE * (0.2 + grid.csf))
    ramp = np.linspace(-1.0, 1.0, n_timepoints, dtype=np.float32)
    signal += np.outer(ramp, rng.normal(0.0, DRIFT_AMPLITUDE, grid.n_voxels).astype(np.float32))
    signal += DRIFT_AMPLITUDE * np.cos(np.pi * (ramp[:, None] + 1.0) / 2.0)
    noise_sd = site.noise_sd * float(rng.uniform(0.85, 1.15))
    signal += rng.standard_normal((n_timepoints, grid.n_voxels), dtype=np.float32) * noise_sd
    bold = image * (1.0 + signal / 100.0)

    amplitude = site.motion * float(np.clip(np.exp(rng.normal(0.0, 0.35)), 0.5, 2.0))
    motion, spikes = motion_parameters(rng, n_timepoints, amplitude)
    bold += (motion.astype(np.float32) @ motion_weights(grid, image)).astype(np.float32)
    # Spin-history: a sudden movement leaves the next excitation out of steady state,
    # strongest at the brain edge (Friston et al. 1996); this is what scrubbing removes.
    jumps = rng.choice([-1.0, 1.0], spikes.size) * rng.uniform(0.02, 0.05, spikes.size)
    bold[spikes] += np.outer(jumps, image * (0.3 + grid.edge))
    bold[0] *= DUMMY_FACTOR
    return SimulatedRun(bold=bold.astype(np.float32), motion=motion, spikes=spikes, n_dummy=1)
