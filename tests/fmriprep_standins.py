"""Test support: recording stand-ins for docker, apptainer, singularity and fmriprep (none can run here).

``install(bin_dir, record, mode=..., version=...)`` writes executables ``docker``, ``apptainer``,
``singularity`` and ``fmriprep`` into ``bin_dir``; put it first on PATH. Every call appends one JSON
line to ``record``: ``{"tool", "argv", "cwd", "env"}`` (argv without the program name; env holds
TEMPLATEFLOW_HOME, FS_LICENSE and APPTAINERENV_*/SINGULARITYENV_* when set).

- ``docker`` answers the probes ``fmriprep-docker`` makes (``docker version``, ``docker images -q``,
  ``docker run --entrypoint=free ... -m``), so the real wrapper builds and "runs" its command; the final
  ``docker run ... IMAGE /data /out participant ...`` acts as fMRIPrep with the ``-v`` mounts mapped back.
- ``apptainer``/``singularity run [--cleanenv] [--env K=V] [-B src:dst[:ro]] IMAGE args`` act as fMRIPrep
  with the binds mapped back (the image file must exist).
- ``fmriprep`` acts as fMRIPrep directly (``--version`` prints the version).

Acting as fMRIPrep, by ``mode`` (per subject: env ``STANDIN_MODE`` = JSON {label: mode}):
"derivatives" writes the fMRIPrep 23-25 outputs of every BOLD run the BIDS filter selects (the demo's
grid at the output resolution, one frame per raw frame, confounds computed from planted motion whose
mean FD is env ``STANDIN_MEAN_FD`` = JSON {label: mm}, default 0.12); "nothing" exits 0 and writes
nothing; "crash" writes a nipype crash file under ``<out>/sub-<label>/log/`` and exits 1.
Env ``STANDIN_MIN_MEM_MB``: a run given less ``--mem-mb`` is "killed" (exit 137), as a job over its memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import uuid
from pathlib import Path

import nibabel as nib
import numpy as np

TESTS = Path(__file__).resolve().parent
_MEMORY = """              total        used        free      shared  buff/cache   available
Mem:          64000        1200       60000          10        2800       62000
Swap:             0           0           0
"""
_ENTITY = {"ses": "session", "task": "task", "acq": "acquisition", "run": "run", "rec": "reconstruction",
           "dir": "direction", "echo": "echo"}


def install(bin_dir: Path, record: Path, *, mode: str = "derivatives", version: str = "25.2.7") -> Path:
    """Write the four stand-in executables into ``bin_dir`` (created) and return it."""
    bin_dir = Path(bin_dir)
    bin_dir.mkdir(parents=True, exist_ok=True)
    for tool in ("docker", "apptainer", "singularity", "fmriprep"):
        script = bin_dir / tool
        script.write_text(
            f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(TESTS)!r})\n"
            f"from fmriprep_standins import main\n"
            f"sys.exit(main({tool!r}, sys.argv[1:], {str(record)!r}, {mode!r}, {version!r}))\n"
        )
        script.chmod(0o755)
    return bin_dir


def main(tool: str, argv: list[str], record: str, mode: str, version: str) -> int:
    """Entry point of every stand-in executable."""
    keep = ("TEMPLATEFLOW_HOME", "FS_LICENSE")
    env = {k: v for k, v in os.environ.items() if k in keep or k.startswith(("APPTAINERENV_", "SINGULARITYENV_"))}
    with open(record, "a") as handle:
        handle.write(json.dumps({"tool": tool, "argv": argv, "cwd": os.getcwd(), "env": env}) + "\n")
    if tool == "docker":
        return _docker(argv, mode, version)
    if tool in ("apptainer", "singularity"):
        return _apptainer(tool, argv, mode, version)
    if argv[:1] == ["--version"]:
        print(f"fMRIPrep v{version}")
        return 0
    return _fmriprep(argv, {}, mode, version)


def _docker(argv: list[str], mode: str, version: str) -> int:
    if argv[:1] == ["version"]:
        print("27.3.1")
        return 0
    if argv[:2] == ["images", "-q"]:
        print("0123456789ab")
        return 0
    if argv[:1] != ["run"]:
        print(f"docker stand-in: unexpected call {argv}", file=sys.stderr)
        return 2
    if "--entrypoint=free" in argv:
        print(_MEMORY, end="")
        return 0
    mounts, i = {}, 1
    while argv[i].startswith("-"):
        if argv[i] in ("-v", "-e", "-u"):
            if argv[i] == "-v":
                host, inside = argv[i + 1].split(":")[:2]
                mounts[inside] = host
            i += 2
        else:
            i += 1
    return _fmriprep(argv[i + 1:], mounts, mode, version)  # argv[i] is the image


def _apptainer(tool: str, argv: list[str], mode: str, version: str) -> int:
    binds, i = {}, 1
    while argv[i].startswith("-"):
        if argv[i] in ("-B", "--bind", "--env"):
            if argv[i] != "--env":
                host, inside = argv[i + 1].split(":")[:2]
                binds[inside] = host
            i += 2
        else:
            i += 1
    image = Path(argv[i])
    if not image.is_file():
        print(f"FATAL:   could not open image {image}: failed to retrieve path for {image}", file=sys.stderr)
        return 255
    return _fmriprep(argv[i + 1:], binds, mode, version)


def _host(path: str, mounts: dict[str, str]) -> Path:
    """A path as fMRIPrep sees it, mapped back to the host through the container's mounts."""
    for inside, host in sorted(mounts.items(), key=lambda kv: -len(kv[0])):
        if path == inside or path.startswith(inside + "/"):
            return Path(host + path[len(inside):])
    return Path(path)


def _parse(args: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Positional arguments and options (each option's following non-option words)."""
    positional, options, key = [], {}, None
    for word in args:
        if word.startswith("-"):
            key = word
            options[key] = []
        elif key is None:
            positional.append(word)
        else:
            options[key].append(word)
    return positional, options


def _fmriprep(args: list[str], mounts: dict[str, str], mode: str, version: str) -> int:
    positional, options = _parse(args)
    bids, out = _host(positional[0], mounts), _host(positional[1], mounts)
    label = options["--participant-label"][0].removeprefix("sub-")
    license_path = options.get("--fs-license-file", [mounts.get("/opt/freesurfer/license.txt", "")])[0]
    if not _host(license_path, mounts).is_file():
        print("ERROR: a valid license file is required for FreeSurfer to run.", file=sys.stderr)
        return 1
    print(f"fMRIPrep v{version}: running participant {label} (stand-in)")
    needed = int(os.environ.get("STANDIN_MIN_MEM_MB", "0"))
    if int(options.get("--mem-mb", ["0"])[0]) < needed:
        print(f"Killed (out of memory: this run needs {needed} MB)", file=sys.stderr)
        return 137
    mode = json.loads(os.environ.get("STANDIN_MODE", "{}")).get(label, mode)
    if mode == "nothing":
        print("fMRIPrep finished successfully!")
        return 0
    if mode == "crash":
        return _crash(out, label)
    query = {}
    if "--bids-filter-file" in options:
        query = json.loads(_host(options["--bids-filter-file"][0], mounts).read_text()).get("bold", {})
    space, _, res = options.get("--output-spaces", ["MNI152NLin2009cAsym:res-2"])[0].partition(":res-")
    for raw in sorted((bids / f"sub-{label}").rglob("*_bold.nii.gz")):
        entities = dict(p.split("-", 1) for p in raw.name.split(".")[0].split("_")[1:-1])
        wanted = {_ENTITY[k]: (int(v) if k == "run" else v) for k, v in entities.items() if k in _ENTITY}
        if all(wanted.get(k) == v for k, v in query.items() if k not in ("datatype", "suffix")):
            _derivatives(raw, bids, out / raw.parent.relative_to(bids), label, space, int(res or 2))
    (out / "dataset_description.json").write_text(json.dumps(
        {"Name": "fMRIPrep - fMRI PREProcessing workflow", "BIDSVersion": "1.8.0", "DatasetType": "derivative",
         "GeneratedBy": [{"Name": "fMRIPrep", "Version": version}]}))
    (out / f"sub-{label}.html").write_text("<html>stand-in report</html>")
    print("fMRIPrep finished successfully!")
    return 0


def _crash(out: Path, label: str) -> int:
    run = f"20261124-120000_{uuid.uuid4()}"
    crash = out / f"sub-{label}" / "log" / run / f"crash-20261124-120001-root-bold_reg_wf-{uuid.uuid4()}.txt"
    crash.parent.mkdir(parents=True, exist_ok=True)
    crash.write_text("Node: fmriprep_25_2_wf.sub_wf.bold_reg_wf\nTraceback (most recent call last):\n"
                     "RuntimeError: antsRegistration exited with code 137 (killed: out of memory?)\n")
    print("Traceback (most recent call last):\n  File \"fmriprep/cli/run.py\", line 183, in main\n"
          "RuntimeError: Workflow did not execute cleanly. Check log for details", file=sys.stderr)
    print(f"fMRIPrep failed: 1 nodes failed; crash file {crash}", file=sys.stderr)
    return 1


def _repetition_time(raw: Path, bids: Path) -> float:
    """RepetitionTime from the run's sidecars (BIDS inheritance, nearest wins), else the header."""
    stem = raw.name.removesuffix(".nii.gz")
    folder = raw.parent
    while True:
        for sidecar in (folder / f"{stem}.json", folder / "task-rest_bold.json"):
            if sidecar.is_file() and "RepetitionTime" in json.loads(sidecar.read_text()):
                return float(json.loads(sidecar.read_text())["RepetitionTime"])
        if folder == bids:
            return float(nib.load(raw).header.get_zooms()[3])
        folder = folder.parent


def _derivatives(raw: Path, bids: Path, func: Path, label: str, space: str, res: int) -> None:
    from brainage.demo.confounds import confounds_table, framewise_displacement
    from brainage.demo.grid import make_grid

    grid = make_grid(res)
    n_frames = nib.load(raw).shape[3]
    tr = _repetition_time(raw, bids)
    rng = np.random.default_rng(int(hashlib.sha256(label.encode()).hexdigest()[:8], 16))
    slow = np.cumsum(rng.normal(size=(n_frames, 8)), axis=0)
    bold = 100.0 + rng.normal(size=(grid.n_voxels, 8)) @ slow.T * 0.5 + rng.normal(size=(grid.n_voxels, n_frames))
    bold = bold.T.astype(np.float32)  # (n_frames, n_voxels)
    motion = np.cumsum(rng.normal(size=(n_frames, 6)) * [1, 1, 1, 0.02, 0.02, 0.02], axis=0)
    target = json.loads(os.environ.get("STANDIN_MEAN_FD", "{}")).get(label, 0.12)
    motion *= target / np.nanmean(framewise_displacement(motion))  # FD is linear in the motion's scale
    table, metadata = confounds_table(grid, bold, motion, tr, 0)
    stem = raw.name.removesuffix("_bold.nii.gz")
    prefix = func / f"{stem}_space-{space}_res-{res}"
    func.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(grid.to_volume(bold), grid.affine), f"{prefix}_desc-preproc_bold.nii.gz")
    Path(f"{prefix}_desc-preproc_bold.json").write_text(json.dumps(
        {"RepetitionTime": tr, "SkullStripped": False, "TaskName": "rest"}))
    nib.save(nib.Nifti1Image(grid.mask.astype(np.uint8), grid.affine), f"{prefix}_desc-brain_mask.nii.gz")
    table.to_csv(func / f"{stem}_desc-confounds_timeseries.tsv", sep="\t", index=False, na_rep="n/a")
    (func / f"{stem}_desc-confounds_timeseries.json").write_text(json.dumps(metadata))
