"""Test support: fMRIPrep derivative folders named as fMRIPrep 21-25 names them.

``write_run(derivatives, label, ...)`` writes one preprocessed run's files, ``sub-<label>/[ses-<s>/]func/
sub-<label>[_ses-<s>]_task-<t>[_acq-<a>][_run-<r>]_space-<space>[_res-<res>]_desc-preproc_bold.nii.gz``,
its ``.json`` sidecar, the ``desc-brain_mask.nii.gz`` of the same space and the run's
``desc-confounds_timeseries.tsv`` and ``.json`` (no space entities), each with distinct content
(names only: discovery reads no image). ``rename_demo_run`` moves a generated demo subject's real
files to such names, for tests that run the workflow on them.
"""

from __future__ import annotations

from pathlib import Path

SPACE = "MNI152NLin2009cAsym"
KINDS = ("bold", "bold_json", "mask", "confounds", "confounds_json")


def run_names(label: str, *, ses: str | None = None, task: str = "rest", acq: str | None = None,
              run: int | str | None = None, space: str = SPACE, res: str | None = None,
              echo: int | None = None) -> dict[str, str]:
    """The file names (relative to the derivatives folder) of one run, by kind."""
    folder = f"sub-{label}/" + (f"ses-{ses}/" if ses else "") + "func/"
    entities = [f"sub-{label}"] + ([f"ses-{ses}"] if ses else []) + [f"task-{task}"]
    entities += ([f"acq-{acq}"] if acq else []) + ([f"run-{run}"] if run is not None else [])
    entities += [f"echo-{echo}"] if echo is not None else []
    stem = "_".join(entities)
    spaced = f"{stem}_space-{space}" + (f"_res-{res}" if res else "")
    return {
        "bold": folder + f"{spaced}_desc-preproc_bold.nii.gz",
        "bold_json": folder + f"{spaced}_desc-preproc_bold.json",
        "mask": folder + f"{spaced}_desc-brain_mask.nii.gz",
        "confounds": folder + f"{stem}_desc-confounds_timeseries.tsv",
        "confounds_json": folder + f"{stem}_desc-confounds_timeseries.json",
    }


def write_run(derivatives: Path, label: str, *, skip: tuple[str, ...] = (), **entities) -> dict[str, Path]:
    """Write one run's files (distinct small contents), except the kinds in ``skip``; return every path."""
    paths = {kind: Path(derivatives, name) for kind, name in run_names(label, **entities).items()}
    for kind, path in paths.items():
        if kind in skip:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{kind} of {path.name}")
    return paths


def rename_demo_run(derivatives: Path, label: str, demo_res: str, **entities) -> dict[str, Path]:
    """Move one demo subject's files (``sub-<label>/func/..._res-<demo_res>_...``) to the names of ``entities``."""
    old = {kind: Path(derivatives, name) for kind, name in run_names(label, res=demo_res).items()}
    new = {kind: Path(derivatives, name) for kind, name in run_names(label, **entities).items()}
    for kind, path in old.items():
        new[kind].parent.mkdir(parents=True, exist_ok=True)
        path.replace(new[kind])
    return new


def write_local_bids(root: Path, ages: dict[str, float], *, n_frames: int = 60, seed: int = 0) -> Path:
    """A small raw BIDS dataset: participants.tsv (participant_id, age, sex, site), per subject a ses-1
    T1w and two rest runs (run-1, run-2) with sidecars; tiny valid NIfTIs (indi_layouts' writer)."""
    import numpy as np
    import pandas as pd
    from indi_layouts import _site_root, _subject_files

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    _site_root(root)
    for label in ages:
        _subject_files(root, label, "1", ["task-rest_run-1", "task-rest_run-2"], rng, sidecars=True, n_frames=n_frames)
    pd.DataFrame({"participant_id": [f"sub-{x}" for x in ages], "age": list(ages.values()),
                  "sex": ["F", "M"] * (len(ages) // 2) + ["F"] * (len(ages) % 2), "site": "local"}).to_csv(
        root / "participants.tsv", sep="\t", index=False)
    return root
