"""Tiny synthetic fMRIPrep-format subjects for the extract tests (BOLD, mask, confounds, atlas)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[2]

_MOTION = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]
_EXPANSIONS = ["", "_derivative1", "_power2", "_derivative1_power2"]
# Column names as fMRIPrep >= 21 writes them (shared/data/fmriprep_confounds_format_example),
# without the one-hot motion_outlierNN / non_steady_state_outlierNN columns (added on request).
COMPCOR = (
    [f"t_comp_cor_{i:02d}" for i in range(3)] + [f"c_comp_cor_{i:02d}" for i in range(3)]
    + [f"w_comp_cor_{i:02d}" for i in range(4)] + [f"a_comp_cor_{i:02d}" for i in range(5)]
)
PLANT_FREQ_HZ = 0.05
MOTION_WEIGHT = 4.0


def extract_params(**overrides) -> dict:
    """The ``extract`` section of config/config.yaml, with overrides.

    ``on_region_loss`` is "warn" and ``min_region_coverage`` 0.25 unless overridden: the
    synthetic subject's label table lists a region without voxels (``roi_009``), and its octants
    lie 27/64 inside the mask (the mask leaves out a one-voxel border).
    """
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    return {**config["extract"], "on_region_loss": "warn", "min_region_coverage": 0.25, **overrides}


def custom_params(strategy: list[str], *, motion: str = "full", wm_csf: str = "basic", **overrides) -> dict:
    """``extract_params`` with ``denoise: custom`` and these confound groups (censoring: ``scrub``)."""
    base = extract_params()
    return extract_params(denoise="custom", custom=base["custom"] | {"strategy": strategy, "motion": motion,
                                                                       "wm_csf": wm_csf}, **overrides)


def write_atlas_dir(folder: Path, image: Path | None, labels: pd.DataFrame, kind: str = "labels",
                    **meta) -> Path:
    """An atlas folder as ``python -m brainage.download atlas`` writes it (atlas.json, labels.tsv, image)."""
    folder.mkdir(parents=True, exist_ok=True)
    if image is not None:
        shutil.copyfile(image, folder / "atlas.nii.gz")
    labels.to_csv(folder / "labels.tsv", sep="\t", index=False)
    (folder / "atlas.json").write_text(json.dumps({
        "id": folder.name, "name": "file", "kind": kind, "image": None if image is None else "atlas.nii.gz",
        "radius_mm": None, "allow_overlap": False, "space": "MNI152NLin2009cAsym", "source": "test",
        "citation": "test", "spec": {"name": "file"}} | meta))
    return folder


@dataclass
class Subject:
    """Paths of one synthetic subject and the signals planted in it."""

    bold: Path
    mask: Path
    confounds: Path
    atlas: Path
    atlas_labels: Path
    truth: dict = field(default_factory=dict)

    @property
    def atlas_dir(self) -> Path:
        """The atlas as a folder (what extraction reads), built once beside the label image."""
        folder = self.atlas.parent / "octants"
        if not folder.is_dir():
            write_atlas_dir(folder, self.atlas, pd.read_csv(self.atlas_labels, sep="\t"))
        return folder


def _smooth_noise(rng: np.random.Generator, n: int, tr: float, scale: float) -> np.ndarray:
    # Sum of in-band sinusoids (0.015-0.09 Hz) with random phases: survives the band-pass, so
    # only confound regression can remove it.
    t = np.arange(n) * tr
    freqs = rng.uniform(0.015, 0.09, size=4)
    phases = rng.uniform(0, 2 * np.pi, size=4)
    return scale * np.sin(2 * np.pi * freqs[:, None] * t + phases[:, None]).sum(axis=0)


def _cosines(n: int, tr: float) -> np.ndarray:
    # fMRIPrep's cosineNN: DCT-II basis for a 128 s high-pass (nilearn/nipype convention).
    order = int(np.floor(2 * n * tr / 128.0))
    k = np.arange(1, order + 1)
    return np.sqrt(2.0 / n) * np.cos(np.pi * (np.arange(n)[:, None] + 0.5) * k / n)


def make_confounds(n: int, tr: float, rng: np.random.Generator, non_steady: tuple[int, ...] = ()) -> pd.DataFrame:
    """An fMRIPrep-format confounds table (n/a in the first row of derivative columns)."""
    cols = {}
    motion = {name: _smooth_noise(rng, n, tr, 0.02 if name.startswith("trans") else 0.0003) for name in _MOTION}
    for name in ["global_signal", "csf", "white_matter"] + _MOTION:
        base = motion[name] if name in motion else rng.normal(size=n)
        deriv = np.r_[np.nan, np.diff(base)]
        for suffix, values in zip(_EXPANSIONS, [base, deriv, base**2, deriv**2]):
            cols[name + suffix] = values
    cols["csf_wm"] = rng.normal(size=n)
    cols["tcompcor"] = rng.normal(size=n)
    d = {k: np.abs(np.r_[np.nan, np.diff(motion[k])]) for k in _MOTION}
    # Power et al. 2012: FD = sum |d trans| + 50 mm * sum |d rot|.
    cols["framewise_displacement"] = sum(d[k] for k in _MOTION[:3]) + 50 * sum(d[k] for k in _MOTION[3:])
    cols["std_dvars"] = np.r_[np.nan, 1 + 0.1 * rng.normal(size=n - 1)]
    cols["dvars"] = cols["std_dvars"] * 20
    cols["rmsd"] = np.r_[np.nan, np.abs(rng.normal(0.02, 0.005, size=n - 1))]
    for name in COMPCOR:
        cols[name] = rng.normal(size=n) / np.sqrt(n)
    for k, values in enumerate(_cosines(n, tr).T):
        cols[f"cosine{k:02d}"] = values
    for k, frame in enumerate(non_steady):
        cols[f"non_steady_state_outlier{k:02d}"] = (np.arange(n) == frame).astype(float)
    return pd.DataFrame(cols)


def _write_nifti(data: np.ndarray, affine: np.ndarray, path: Path) -> None:
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, path)


def _octant_atlas(shape: tuple[int, int, int]) -> np.ndarray:
    # Labels 1..8: the grid cut in half along each axis.
    ijk = np.indices(shape)
    halves = [(ijk[a] >= shape[a] // 2).astype(int) for a in range(3)]
    return (1 + halves[0] + 2 * halves[1] + 4 * halves[2]).astype(np.int16)


def make_subject(
    root: Path,
    *,
    n: int = 100,
    shape: tuple[int, int, int] = (8, 8, 8),
    voxel_size: float = 4.0,
    tr: float = 2.0,
    seed: int = 0,
    origin: tuple[float, float, float] = (-16.0, -16.0, -16.0),
    non_steady: tuple[int, ...] = (),
    fd_spikes: dict | None = None,
    dvars_spikes: dict | None = None,
    edit_confounds=None,
    sidecar: dict | None = None,
    session: str | None = None,
    run: str | None = None,
) -> Subject:
    """Write one synthetic subject in fMRIPrep layout under ``root``.

    The BOLD (float32, ``shape`` + (n,)) is 100 + a voxel offset + white noise (SD 0.3)
    + ``MOTION_WEIGHT`` x trans_x in every voxel + a 0.05 Hz sinusoid (amplitude 1) in region
    ``roi_001``. The mask leaves a one-voxel border. The atlas (same grid) has 8 octant labels;
    the label table also lists ``roi_009`` (label 9), which has no voxel. ``fd_spikes`` /
    ``dvars_spikes`` map frame -> value written into framewise_displacement / std_dvars.
    ``session`` / ``run`` add ``ses-`` (and its folder) / ``run-`` to the names, as fMRIPrep names them.
    """
    rng = np.random.default_rng(seed)
    func = root / "sub-01" / (f"ses-{session}" if session else "") / "func"
    func.mkdir(parents=True, exist_ok=True)
    run_stem = "sub-01" + (f"_ses-{session}" if session else "") + "_task-rest" + (f"_run-{run}" if run else "")
    stem = f"{run_stem}_space-MNI152NLin2009cAsym_res-{voxel_size:g}"
    affine = np.diag([voxel_size] * 3 + [1.0])
    affine[:3, 3] = origin

    conf = make_confounds(n, tr, rng, non_steady)
    for frame, value in (fd_spikes or {}).items():
        conf.loc[frame, "framewise_displacement"] = value
    for frame, value in (dvars_spikes or {}).items():
        conf.loc[frame, "std_dvars"] = value
    if edit_confounds is not None:
        conf = edit_confounds(conf)
    confounds = func / f"{run_stem}_desc-confounds_timeseries.tsv"
    conf.to_csv(confounds, sep="\t", index=False, na_rep="n/a")
    meta = {name: {"Method": "tCompCor" if name.startswith("t_") else "aCompCor", "Retained": True,
                   "Mask": {"a": "combined", "c": "CSF", "w": "WM", "t": "combined"}[name[0]]}
            for name in COMPCOR}
    confounds.with_suffix(".json").write_text(json.dumps(meta))

    atlas = _octant_atlas(shape)
    brain = np.zeros(shape, dtype=bool)
    brain[1:-1, 1:-1, 1:-1] = True
    t = np.arange(n) * tr
    planted = np.sin(2 * np.pi * PLANT_FREQ_HZ * t)
    data = 100 + rng.normal(0, 5, size=shape)[..., None] + rng.normal(0, 0.3, size=shape + (n,))
    trans_x = conf["trans_x"].to_numpy()
    data += MOTION_WEIGHT * trans_x / trans_x.std()
    data[atlas == 1] += planted
    bold = func / f"{stem}_desc-preproc_bold.nii.gz"
    _write_nifti(data.astype(np.float32), affine, bold)
    bold_sidecar = {"RepetitionTime": tr, "TaskName": "rest"} if sidecar is None else sidecar
    (func / f"{stem}_desc-preproc_bold.json").write_text(json.dumps(bold_sidecar))
    mask = func / f"{stem}_desc-brain_mask.nii.gz"
    _write_nifti(brain.astype(np.uint8), affine, mask)

    atlas_path = root / "atlas" / "octants.nii.gz"
    atlas_path.parent.mkdir(exist_ok=True)
    _write_nifti(atlas, affine, atlas_path)
    labels = atlas_path.with_name("octants.tsv")
    pd.DataFrame({"index": range(1, 10), "name": [f"roi_{i:03d}" for i in range(1, 10)]}).to_csv(
        labels, sep="\t", index=False
    )
    truth = {"planted": planted, "trans_x": trans_x, "brain": brain, "atlas": atlas,
             "affine": affine, "data": data.astype(np.float32)}
    return Subject(bold, mask, confounds, atlas_path, labels, truth)


def outputs(root: Path) -> dict:
    """Output paths for one extract_subject call."""
    out = root / "out"
    return {
        "series_out": [out / "sub-01_timeseries.parquet"],
        "volumes_out": out / "sub-01_volumes.parquet",
        "qc_out": out / "sub-01_qc.json",
    }


def rewrite_bold(subject: Subject, data: np.ndarray) -> None:
    """Replace the subject's BOLD data (any shape), keeping its affine and file name."""
    _write_nifti(np.asarray(data, dtype=np.float32), subject.truth["affine"], subject.bold)
