"""Generate the demo cohort: fMRIPrep-format derivatives of synthetic resting-state runs with a planted age effect.

Layout (fMRIPrep 23-25 names, ``res-<voxel_size>``)::

    DIR/participants.tsv, participants.json
    DIR/derivatives/dataset_description.json
    DIR/derivatives/sub-001/func/sub-001_task-rest_space-MNI152NLin2009cAsym_res-4_desc-preproc_bold.nii.gz (+ .json)
    DIR/derivatives/sub-001/func/sub-001_task-rest_space-MNI152NLin2009cAsym_res-4_desc-brain_mask.nii.gz
    DIR/derivatives/sub-001/func/sub-001_task-rest_desc-confounds_timeseries.tsv (+ .json)

Signal model (every random draw comes from ``numpy.random.default_rng([seed, stream, index])``,
so the cohort is a pure function of the seed and the parameters; ``a`` is the age scaled to [0, 1]):

* Cohort: ages uniform on ``[age_min, age_max]`` (one per equal-width stratum, shuffled over
  subject ids); sex at random; sites assigned round robin over the age ranks (random order
  within each round), so each site spans the whole age range and age is independent of site.
* Grid: nilearn's MNI152 brain mask and GM/WM templates averaged over blocks of
  ``voxel_size`` mm (mask = fraction >= 0.5); CSF is the rest of the mask.
* Effect 1, network connectivity: 10 nodes (spheres of radius 25 mm, the nearer centre
  winning where two overlap) in 3 networks (:data:`brainage.demo.grid.NODES`). Node signal
  ``s_i = sqrt(w) z_n + sqrt(b) g + sqrt(1 - w - b) u_i`` with ``g, z_n, u_i`` band-limited
  (0.01-0.1 Hz) and uncorrelated in the sample, ``w = 0.88 - 0.78 a``, ``b = 0.02 + 0.38 a``:
  within-network correlation ``w + b`` falls from 0.9 to 0.5, between-network correlation
  ``b`` rises from 0.02 to 0.4 (:func:`brainage.demo.signals.age_coupling`).
* Effect 2, local coherence: a node voxel's neural signal is ``sqrt(p) s_i + sqrt(1 - p) e_v``
  with ``e_v`` its own signal; ``p = 0.8 - 0.65 a`` in the default-mode and somatomotor
  nodes, ``p = 0.5`` (control) in the salience nodes. A young subject's frame is smooth
  inside a node, an old subject's speckled, also after z-scoring and 8 mm block averaging.
* Other voxels: a smooth field (Gaussian blobs, 20 mm lattice, each with its own signal)
  plus the voxel's own signal. Neural amplitude: 1.6 % in nodes, 0.8 % elsewhere, scaled by
  the grey-matter fraction.
* Nuisance: WM and CSF physiological signals in every voxel (weighted by tissue), a linear
  drift per voxel and a slow shared drift, white noise (site level x subject factor); head
  motion (6 rigid parameters mixing 2 smooth random walks, amplitude set by site x subject
  and independent of age, plus 1-3 single-frame spikes per 100 frames) entering through
  ``-grad(B) . d`` (strong at edges and ventricles) and spin-history intensity jumps at
  spikes; a brighter first volume (non-steady state, flagged ``non_steady_state_outlier00``).
* Site: intensity scale and offset, noise level, motion level and a smooth static spatial
  pattern per site (:func:`brainage.demo.signals.make_sites`).
* Confounds are computed from the generated images as fMRIPrep computes them
  (:mod:`brainage.demo.confounds`).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from brainage._version import source_version
from brainage.demo import subject_ids
from brainage.demo.confounds import confounds_table
from brainage.demo.grid import make_grid
from brainage.demo.signals import age_coupling, make_sites, simulate_run
from brainage.errors import ConfigError
from brainage.storage import atomic_path, write_json, write_tsv

logger = logging.getLogger(__name__)

TASK, SPACE = "rest", "MNI152NLin2009cAsym"
VOXEL_SIZES = (2, 3, 4, 6, 8)
#: MNI152 template space for the NIfTI qform/sform code (NIFTI_XFORM_MNI_152).
XFORM_MNI = 4


@dataclass(frozen=True)
class DemoParams:
    """The ``demo`` config section (config/config.schema.yaml), checked."""

    n_subjects: int
    sites: tuple[str, ...]
    n_timepoints: int
    tr: float
    voxel_size: int
    age_min: float
    age_max: float

    @classmethod
    def from_dict(cls, params: dict) -> DemoParams:
        """Check the section's values; raise ConfigError naming the key otherwise."""
        missing = sorted(set(cls.__dataclass_fields__) - set(params))
        if missing:
            raise ConfigError(f"demo parameters lack {', '.join('demo.' + m for m in missing)}")
        out = cls(**{k: params[k] for k in cls.__dataclass_fields__} | {"sites": tuple(params["sites"])})
        if not out.sites or len(set(out.sites)) != len(out.sites):
            raise ConfigError(f"demo.sites must be distinct labels, at least one; found {list(out.sites)}")
        if out.n_subjects < len(out.sites):
            raise ConfigError(
                f"demo.n_subjects ({out.n_subjects}) is smaller than the number of sites ({len(out.sites)})"
            )
        if out.n_timepoints < 10:
            raise ConfigError(f"demo.n_timepoints must be >= 10, found {out.n_timepoints}")
        if out.voxel_size not in VOXEL_SIZES:
            raise ConfigError(f"demo.voxel_size must be one of {VOXEL_SIZES}, found {out.voxel_size}")
        if not out.tr > 0:
            raise ConfigError(f"demo.tr must be > 0 s, found {out.tr}")
        if not 0 <= out.age_min < out.age_max:
            raise ConfigError(f"demo.age_min must be >= 0 and < demo.age_max, found {out.age_min} and {out.age_max}")
        return out


def draw_participants(params: DemoParams, seed: int) -> pd.DataFrame:
    """The cohort table: ``participant_id``, ``age`` (years, 1 decimal), ``sex`` (M/F), ``site``.

    Ages are stratified-uniform (one per equal-width stratum, shuffled over subject ids).
    Sites go round robin over the age ranks, in a random order within each round, so every
    site spans the age range and no site is systematically older.
    """
    rng = np.random.default_rng([seed, 0])
    n, n_sites = params.n_subjects, len(params.sites)
    strata = (rng.permutation(n) + rng.uniform(0.0, 1.0, n)) / n
    age = np.round(params.age_min + strata * (params.age_max - params.age_min), 1)
    rank = np.argsort(np.argsort(age, kind="stable"), kind="stable")
    rounds = np.concatenate([rng.permutation(n_sites) for _ in range(-(-n // n_sites))])
    return pd.DataFrame(
        {
            "participant_id": [f"sub-{label}" for label in subject_ids(n)],
            "age": age,
            "sex": rng.choice(["F", "M"], n),
            "site": [params.sites[rounds[r]] for r in rank],
        }
    )


def func_paths(out_dir: Path, participant_id: str, voxel_size: int) -> dict[str, Path]:
    """The fMRIPrep output paths of one subject (keys ``bold``, ``mask``, ``confounds``)."""
    func = Path(out_dir) / "derivatives" / participant_id / "func"
    prefix = f"{participant_id}_task-{TASK}"
    spatial = f"{prefix}_space-{SPACE}_res-{voxel_size}"
    return {
        "bold": func / f"{spatial}_desc-preproc_bold.nii.gz",
        "mask": func / f"{spatial}_desc-brain_mask.nii.gz",
        "confounds": func / f"{prefix}_desc-confounds_timeseries.tsv",
    }


def generate_demo(out_dir: str | Path, params: dict, seed: int, n_threads: int = 1) -> None:
    """Write the demo cohort under ``out_dir`` (layout and model: see the module docstring).

    Parameters
    ----------
    out_dir : str or Path
        Output folder (created if needed); existing files are replaced atomically.
    params : dict
        The ``demo`` config section: ``n_subjects``, ``sites``, ``n_timepoints``, ``tr`` (s),
        ``voxel_size`` (mm), ``age_min``, ``age_max`` (years).
    seed : int
        The config seed; the same seed and params give the same data.
    n_threads : int
        Subjects generated concurrently. Each subject draws from its own seeded generator,
        so the data do not depend on it.

    Raises
    ------
    ConfigError
        If a parameter is missing or out of range.
    """
    cfg = DemoParams.from_dict(params)
    if n_threads < 1:
        raise ConfigError(f"n_threads must be >= 1, found {n_threads}")
    out_dir = Path(out_dir)
    start = time.perf_counter()
    grid = make_grid(cfg.voxel_size)
    sites = make_sites(list(cfg.sites), grid, seed)
    participants = draw_participants(cfg, seed)

    def one_subject(index: int) -> None:
        row = participants.iloc[index]
        rng = np.random.default_rng([seed, 2, index])
        coupling = age_coupling(row.age, cfg.age_min, cfg.age_max)
        run = simulate_run(rng, grid, sites[cfg.sites.index(row.site)], coupling, cfg.n_timepoints, cfg.tr)
        _write_subject(out_dir, row.participant_id, grid, run, cfg)
        logger.debug("%s: age %.1f, site %s, spikes at %s", row.participant_id, row.age, row.site, run.spikes)

    # Threads, not processes: the heavy steps (FFT, sorting, gzip) release the GIL, and the
    # grid is shared without copying. BLAS runs single-threaded: its matrices here are small,
    # and its own threads competing with these (or with other jobs) made generation 2-3x slower.
    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(max_workers=n_threads) as pool:
        list(pool.map(one_subject, range(cfg.n_subjects)))
    write_tsv(out_dir / "participants.tsv", participants)
    write_json(out_dir / "participants.json", PARTICIPANTS_JSON)
    write_json(out_dir / "derivatives" / "dataset_description.json", _dataset_description(cfg, seed))
    logger.info(
        "demo: %d subjects x %d frames at %d mm written to %s in %.1f s",
        cfg.n_subjects, cfg.n_timepoints, cfg.voxel_size, out_dir, time.perf_counter() - start,
    )


def _write_subject(out_dir: Path, participant_id: str, grid, run, cfg: DemoParams) -> None:
    paths = func_paths(out_dir, participant_id, cfg.voxel_size)
    # Integer intensities as scanners store them: rounding (sd 0.3) is far below the noise
    # (sd ~10) and halves the file size and writing time compared with float32.
    bold = grid.to_volume(np.rint(run.bold), dtype=np.int16)
    _save_nifti(paths["bold"], bold, grid.affine, zooms=(grid.voxel_size,) * 3 + (cfg.tr,))
    _save_nifti(paths["mask"], grid.mask.astype(np.uint8), grid.affine, zooms=(grid.voxel_size,) * 3)
    write_json(
        paths["bold"].with_name(paths["bold"].name.replace(".nii.gz", ".json")),
        {
            "RepetitionTime": cfg.tr,
            "TaskName": TASK,
            "SkullStripped": False,
            # fMRIPrep reports the slice-timing reference time (slice_time_ref 0.5).
            "StartTime": cfg.tr / 2.0,
            "Description": "SYNTHETIC data generated by the brainage demo (not a real scan).",
        },
    )
    table, metadata = confounds_table(grid, run.bold, run.motion, cfg.tr, run.n_dummy)
    write_tsv(paths["confounds"], table)
    write_json(paths["confounds"].with_suffix(".json"), metadata)


def _save_nifti(path: Path, data: np.ndarray, affine: np.ndarray, zooms: tuple[float, ...]) -> None:
    img = nib.Nifti1Image(data, affine)
    img.header.set_zooms(zooms)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=XFORM_MNI)
    img.set_sform(affine, code=XFORM_MNI)
    with atomic_path(path) as tmp:
        nib.save(img, tmp)


PARTICIPANTS_JSON = {
    "participant_id": {"Description": "Unique participant identifier (synthetic demo subject)."},
    "age": {"Description": "Age at scan (synthetic, drawn uniformly).", "Units": "year"},
    "sex": {"Description": "Sex (synthetic, random).", "Levels": {"F": "female", "M": "male"}},
    "site": {"Description": "Acquisition site (synthetic; sets intensity, noise and motion levels)."},
}


def _dataset_description(cfg: DemoParams, seed: int) -> dict:
    return {
        "Name": "brainage demo cohort (synthetic fMRIPrep derivatives)",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [
            {"Name": "brainage demo", "Version": source_version(), "Description": "synthetic fMRIPrep-format data"}
        ],
        "brainage": {"seed": seed, "params": asdict(cfg)},
    }
