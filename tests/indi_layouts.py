"""Test support: tiny raw BIDS trees laid out as the INDI bucket stores ADHD-200, NKI-RS and CoRR.

``write_raw_bids(root, dataset, n_subjects, seed)`` writes, under ``root`` (the bucket root), the
dataset's phenotype file(s) in their real format and tiny valid NIfTIs with JSON sidecars, and
returns the manifest that ``normalise_phenotypes`` must produce. ``listing(root)`` gives the keys.

Formats (sources in brainage.download.indi.LAYOUTS):
- adhd200: <site>/participants.tsv per site, latin-1, ids unpadded (10001 -> sub-0010001),
  gender Male/Female, dx names, -999 missing; one subject listed twice (identical rows, as NYU
  does); site-level T1w.json and task-rest_bold.json sidecars.
- nki_rs: participants.tsv at the root (participant_id without sub-, age, sex MALE/FEMALE,
  handedness); sessions ses-BAS1; a sidecar beside each image; rest runs task-rest_acq-645, plus a
  breath-hold run that must not be fetched.
- corr: <site>/participants.tsv (participant_id, sex; no age: ASSUMED format) and
  sub-*/sub-*_sessions.tsv (session_id, age: ASSUMED), sessions ses-1 and ses-2, two rest runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

PREFIXES = {
    "adhd200": "data/Projects/ADHD200/RawDataBIDS",
    "nki_rs": "data/Projects/RocklandSample/RawDataBIDSLatest",
    "corr": "data/Projects/CORR/RawDataBIDS",
}
SITES = {"adhd200": ["KKI", "NYU"], "corr": ["BMB_1", "IPCAS_1"], "nki_rs": ["NKI"]}
TR_S = 2.0
_DX = [("Typically Developing Children", "TD"), ("ADHD-Combined", "ADHD"), ("ADHD-Inattentive", "ADHD")]


def listing(root: Path) -> list[str]:
    """Every file under ``root`` as a bucket key (posix, relative to root), sorted."""
    return sorted(p.relative_to(root).as_posix() for p in Path(root).rglob("*") if p.is_file())


def _image(path: Path, shape: tuple[int, ...], rng: np.random.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = rng.normal(100.0, 5.0, size=shape).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([3.0, 3.0, 3.0, 1.0])), path)


def _json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _subject_files(base: Path, label: str, session: str, runs: list[str], rng, sidecars: bool, n_frames: int = 5) -> None:
    """anat T1w and func bold runs (entity strings before _bold) of one session."""
    stem = f"sub-{label}_ses-{session}"
    anat = base / f"sub-{label}" / f"ses-{session}" / "anat" / f"{stem}_run-1_T1w.nii.gz"
    _image(anat, (4, 4, 4), rng)
    if sidecars:
        _json(anat.with_name(anat.name.replace(".nii.gz", ".json")), {"RepetitionTime": 2.3})
    for run in runs:
        bold = base / f"sub-{label}" / f"ses-{session}" / "func" / f"{stem}_{run}_bold.nii.gz"
        _image(bold, (4, 4, 4, n_frames), rng)
        if sidecars:
            _json(bold.with_name(bold.name.replace(".nii.gz", ".json")), {"RepetitionTime": TR_S, "TaskName": "rest"})


def _site_root(base: Path) -> None:
    _json(base / "dataset_description.json", {"Name": base.name, "BIDSVersion": "1.0.2"})
    _json(base / "T1w.json", {"RepetitionTime": 2.3})
    _json(base / "task-rest_bold.json", {"RepetitionTime": TR_S, "TaskName": "rest"})


def write_raw_bids(root: Path, dataset: str, n_subjects: int, seed: int, n_frames: int = 5) -> pd.DataFrame:
    """Write a tiny raw BIDS tree in ``dataset``'s bucket layout (BOLD runs of ``n_frames``); return the expected manifest.

    Returns
    -------
    DataFrame
        participant_id, dataset, site, age (float), sex, diagnosis, source_id, session — the
        manifest expected from ``normalise_phenotypes`` (sorted by participant_id).
    """
    rng = np.random.default_rng(seed)
    writer = {"adhd200": _adhd200, "nki_rs": _nki_rs, "corr": _corr}[dataset]
    rows = writer(Path(root) / PREFIXES[dataset], n_subjects, rng, n_frames)
    expected = pd.DataFrame(rows, columns=["participant_id", "site", "age", "sex", "diagnosis", "source_id", "session"])
    expected.insert(1, "dataset", dataset)
    return expected.sort_values("participant_id", ignore_index=True)


def _adhd200(base: Path, n: int, rng, n_frames: int) -> list[tuple]:
    rows, tables = [], {site: [] for site in SITES["adhd200"]}
    for i in range(n):
        site = SITES["adhd200"][i % 2]
        raw = str(1018959 + i) if site == "KKI" else str(10001 + i)  # NYU ids have 5 digits
        label = raw.zfill(7)
        age, (dx, diagnosis) = round(float(rng.uniform(7, 21)), 2), _DX[i % 3]
        gender = ("Male", "Female")[i % 2]
        tables[site].append(f"{raw}\t{gender}\t{age}\tRight\t{dx}\tMedication Na\u00b4ve\t-999")
        rows.append((f"sub-{label}", site, age, gender[0], diagnosis, raw, pd.NA))
        _subject_files(base / site, label, "1", ["task-rest_run-1"], rng, sidecars=False, n_frames=n_frames)
    for site, lines in tables.items():
        if site == "NYU" and lines:
            lines.append(lines[0])  # NYU lists its test subjects twice
        header = "participant_id\tgender\tage\thandedness\tdx\tmed_status\tverbal_iq"
        text = "\n".join([header, *lines]) + "\n"
        (base / site).mkdir(parents=True, exist_ok=True)
        (base / site / "participants.tsv").write_bytes(text.encode("latin-1"))
        _site_root(base / site)
    return rows


def _nki_rs(base: Path, n: int, rng, n_frames: int) -> list[tuple]:
    rows, lines = [], ["participant_id\tage\tsex\thandedness"]
    for i in range(n):
        label = f"A{8326 + i:08d}"
        age, sex = round(float(rng.uniform(6, 85)), 1), ("MALE", "FEMALE")[i % 2]
        lines.append(f"{label}\t{age}\t{sex}\tRIGHT")
        rows.append((f"sub-{label}", "NKI", age, sex[0], pd.NA, label, pd.NA))
        _subject_files(base, label, "BAS1", ["task-rest_acq-645", "task-BREATHHOLD_acq-1400"], rng, sidecars=True,
                       n_frames=n_frames)
    base.mkdir(parents=True, exist_ok=True)
    (base / "participants.tsv").write_text("\n".join(lines) + "\n")
    _json(base / "dataset_description.json", {"Name": "NKI-RS", "BIDSVersion": "1.0.2"})
    return rows


def _corr(base: Path, n: int, rng, n_frames: int) -> list[tuple]:
    rows, tables = [], {site: ["participant_id\tsex"] for site in SITES["corr"]}
    for i in range(n):
        site = SITES["corr"][i % 2]
        label = f"{3001 + i:07d}"
        age, sex = round(float(rng.uniform(18, 60)), 1), "MF"[i % 2]
        tables[site].append(f"{label}\t{sex}")
        subject = base / site / f"sub-{label}"
        subject.mkdir(parents=True, exist_ok=True)
        (subject / f"sub-{label}_sessions.tsv").write_text(f"session_id\tage\nses-1\t{age}\nses-2\t{age + 0.5}\n")
        rows.append((f"sub-{label}", site, age, sex, pd.NA, label, "1"))
        for session in ("1", "2"):
            _subject_files(base / site, label, session, ["task-rest_run-1", "task-rest_run-2"], rng, sidecars=False,
                           n_frames=n_frames)
    for site, lines in tables.items():
        (base / site).mkdir(parents=True, exist_ok=True)
        (base / site / "participants.tsv").write_text("\n".join(lines) + "\n")
        _site_root(base / site)
    return rows
