"""Test support: recording stand-ins for docker, apptainer, singularity and fmriprep (none can run here).

``install(bin_dir, record, mode=..., version=...)`` writes executables ``docker``, ``apptainer``,
``singularity`` and ``fmriprep`` into ``bin_dir``; put it first on PATH. Every call appends one JSON line
to ``record``: ``{"tool", "argv", "cwd", "env"}``; ``argv`` leaves out the program name (``tool`` is
it), so ``argv[0]`` is e.g. "run"; ``env`` holds TEMPLATEFLOW_HOME, FS_LICENSE, APPTAINERENV_* and
SINGULARITYENV_* as the caller set them. ``calls(record, tool)`` reads them back.

- docker: answers fmriprep-docker's probes (``version``, ``images -q``, ``run --entrypoint=free``:
  64000 MB), so the real wrapper "runs" its command; ``run ... IMAGE /data /out participant ...`` acts
  as fMRIPrep seeing only the ``-v`` mounts, mapped back to the host.
- apptainer/singularity: ``run [--cleanenv] [--env K=V] [-B src[:dst[:ro]]] IMAGE args`` acts as fMRIPrep
  seeing only the binds (as under --containall: a command passing here relies on no site's default
  binds); a missing image or bind source exits 255 with apptainer's FATAL line.
- fmriprep: acts on the host; ``--version`` prints ``fMRIPrep v<version>``.

Acting as fMRIPrep (``bids_dir output_dir participant --participant-label L [--bids-filter-file F]
[--output-spaces SPACE[:res-R]...] [-w WORK] [--fs-license-file P] [--dummy-scans N]``, other options
ignored) needs the license (``--fs-license-file``, ``$FS_LICENSE`` or ``$FREESURFER_HOME/license.txt``;
in a container FREESURFER_HOME is /opt/freesurfer), then by mode:
"derivatives" writes the fMRIPrep 23-25 outputs of every BOLD run the filter's "bold" query selects:
per template space the preprocessed BOLD (+ JSON) and brain mask on nilearn's MNI152 mask resampled
to R mm (nearest neighbour; no res: the raw voxel size), one frame per raw frame, the first
``--dummy-scans`` (default 1) non-steady-state; the confounds TSV + JSON (brainage.demo.confounds);
``dataset_description.json`` and ``sub-L.html``. "nothing" exits 0 and writes nothing. "crash" writes
a nipype crash file under ``<out>/sub-L/log/<run>/`` (and the description and report, as fMRIPrep's
final step does), prints the failure to stderr and exits 1.

Environment (read by every call; install()'s arguments are the defaults):
``STANDIN_MODE`` JSON {label: mode}; ``STANDIN_MEAN_FD`` JSON {label: mean FD in mm} (default 0.12);
``STANDIN_MIN_MEM_MB``: a run given a smaller ``--mem-mb`` is killed (exit 137);
``STANDIN_CACHE_DIR``: cache of the resampled template grids (default ``bin_dir/.cache``).
"""

from __future__ import annotations

# Only the standard library at module level: the docker probes answer without loading numpy; the
# derivative writer imports numpy, nibabel, nilearn and brainage.demo.confounds when it runs.
import hashlib
import json
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

TESTS = Path(__file__).resolve().parent
TOOLS = ("docker", "apptainer", "singularity", "fmriprep")
MODES = ("derivatives", "nothing", "crash")
DEFAULT_MEAN_FD_MM = 0.12
DOCKER_VERSION = "27.3.1"
_FREE_M = ("               total        used        free      shared  buff/cache   available\n"
           "Mem:           64000        1200       60000          10        2800       62000\n"
           "Swap:              0           0           0\n")
# Options that take a value (all others are flags) of docker run, apptainer run and fMRIPrep.
_DOCKER_VALUED = {"-e", "--env", "-v", "--volume", "-u", "--user", "--network", "--entrypoint", "--name",
                  "-w", "--workdir", "--mount", "-m", "--memory", "--cpus", "--platform", "--gpus"}
_APPTAINER_VALUED = {"-B", "--bind", "--env", "--env-file", "-H", "--home", "-W", "--workdir", "--pwd",
                     "-S", "--scratch", "-o", "--overlay", "--security", "--mount"}
_FMRIPREP_VALUED = {"--bids-filter-file", "-w", "--work-dir", "--fs-license-file", "--nthreads", "--n-cpus",
                    "--n_cpus", "--omp-nthreads", "--mem-mb", "--mem_mb", "--mem", "--dummy-scans"}
_FMRIPREP_LISTS = {"--participant-label", "--participant_label", "--output-spaces"}
_LICENSE_ERROR = (
    "ERROR: a valid license file is required for FreeSurfer to run. fMRIPrep looked for an existing license "
    "file at several paths, in this order: 1) command line argument ``--fs-license-file``; 2) ``$FS_LICENSE`` "
    "environment variable; and 3) the ``$FREESURFER_HOME/license.txt`` path. Get it (for free) by registering "
    "at https://surfer.nmr.mgh.harvard.edu/registration.html")


def install(bin_dir: Path, record: Path, *, mode: str = "derivatives", version: str = "25.2.7") -> Path:
    """Write the stand-in executables ``docker``, ``apptainer``, ``singularity``, ``fmriprep`` into ``bin_dir``.

    Parameters
    ----------
    bin_dir : Path
        Folder (created) to put first on PATH.
    record : Path
        JSON-lines file every call appends to.
    mode : str
        "derivatives", "nothing" or "crash" (per subject: env ``STANDIN_MODE``).
    version : str
        The fMRIPrep version reported and written into ``dataset_description.json``.

    Returns
    -------
    Path
        ``bin_dir``.
    """
    if mode not in MODES:
        raise ValueError(f"stand-in mode {mode!r} is not one of {list(MODES)}")
    bin_dir = Path(bin_dir).resolve()
    bin_dir.mkdir(parents=True, exist_ok=True)
    defaults = {"record": str(Path(record).resolve()), "mode": mode, "version": version,
                "cache": str(bin_dir / ".cache")}
    for tool in TOOLS:
        script = bin_dir / tool
        script.write_text(
            f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(TESTS)!r})\n"
            f"from fmriprep_standins import main\nsys.exit(main({tool!r}, sys.argv[1:], **{defaults!r}))\n"
        )
        script.chmod(0o755)
    return bin_dir


def calls(record: Path, tool: str | None = None) -> list[dict]:
    """The recorded calls (of one tool, or all), in order."""
    path = Path(record)
    lines = path.read_text().splitlines() if path.is_file() else []
    return [c for c in map(json.loads, lines) if tool is None or c["tool"] == tool]


def main(tool: str, argv: list[str], *, record: str, mode: str, version: str, cache: str) -> int:
    """Entry point of every stand-in executable: record the call, answer it, return the exit code."""
    keep = ("TEMPLATEFLOW_HOME", "FS_LICENSE")
    env = {k: v for k, v in os.environ.items() if k in keep or k.startswith(("APPTAINERENV_", "SINGULARITYENV_"))}
    line = json.dumps({"tool": tool, "argv": argv, "cwd": os.getcwd(), "env": env}) + "\n"
    handle = os.open(record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:  # one write to an O_APPEND file: concurrent jobs cannot interleave their lines
        os.write(handle, line.encode())
    finally:
        os.close(handle)
    settings = {"mode": mode, "version": version, "cache": Path(os.environ.get("STANDIN_CACHE_DIR", cache))}
    if tool == "docker":
        return _docker(argv, settings)
    if tool in ("apptainer", "singularity"):
        return _apptainer(tool, argv, settings)
    return _fmriprep(argv, None, dict(os.environ), settings)


# --- engines -----------------------------------------------------------------------------------------


def _split(argv: list[str], valued: set[str]) -> tuple[list[tuple[str, str | None]], list[str]]:
    """Leading options as (name, value or None), and the words from the first non-option on."""
    options, i = [], 0
    while i < len(argv) and argv[i].startswith("-"):
        name, sep, value = argv[i].partition("=")
        if not sep and name in valued and i + 1 < len(argv):
            value, i = argv[i + 1], i + 1
        options.append((name, value if (sep or name in valued) else None))
        i += 1
    return options, argv[i:]


def _docker(argv: list[str], settings: dict) -> int:
    command, rest = (argv[0], argv[1:]) if argv else ("", [])
    if command == "version":
        print(DOCKER_VERSION if "--format" in rest else f"Server: Docker Engine\n Version: {DOCKER_VERSION}")
        return 0
    if command == "images" and rest[:1] == ["-q"]:
        print(hashlib.sha256(rest[-1].encode()).hexdigest()[:12])
        return 0
    options, words = _split(rest, _DOCKER_VALUED)
    if command != "run" or not words:
        print(f"docker: '{command}' is not a docker command (stand-in knows version, images -q, run IMAGE).",
              file=sys.stderr)
        return 1
    entrypoint = dict(options).get("--entrypoint")
    if entrypoint is not None:  # "free" for fmriprep-docker's memory probe; "bash" for --shell
        print(_FREE_M if entrypoint == "free" else "", end="")
        return 0
    mounts, env = {}, {}
    for name, value in options:
        if name in ("-v", "--volume"):
            host, inside = value.split(":")[:2]
            mounts[inside] = host
        elif name in ("-e", "--env"):
            key, sep, val = value.partition("=")
            env[key] = val if sep else os.environ.get(key, "")
    return _fmriprep(words[1:], mounts, env, settings)


def _apptainer(tool: str, argv: list[str], settings: dict) -> int:
    if argv[:1] in (["--version"], ["version"]):
        print(f"{tool} version 1.3.4")
        return 0
    options, words = _split(argv[1:], _APPTAINER_VALUED)
    if argv[:1] not in (["run"], ["exec"]) or not words:
        print(f"FATAL:   stand-in {tool} knows `run [options] IMAGE args` only, not {argv}", file=sys.stderr)
        return 255
    image, args = Path(words[0]), words[1:] if argv[0] == "run" else words[2:]  # exec IMAGE fmriprep args
    if not image.is_file():
        print(f"FATAL:   could not open image {image.resolve()}: failed to retrieve path for {image}: "
              f"lstat {image}: no such file or directory", file=sys.stderr)
        return 255
    clean = any(name in ("--cleanenv", "-e", "--containall", "-C") for name, _ in options)
    env = {} if clean else dict(os.environ)
    for prefix in ("SINGULARITYENV_", "APPTAINERENV_"):
        env |= {k.removeprefix(prefix): v for k, v in os.environ.items() if k.startswith(prefix)}
    mounts = {}
    for name, value in options:
        if name == "--env":
            env |= dict(item.split("=", 1) for item in value.split(",") if "=" in item)
        for spec in value.split(",") if name in ("-B", "--bind") else []:
            source, _, rest = spec.partition(":")
            inside = rest.split(":")[0] or source
            if not Path(source).exists():
                print(f"FATAL:   container creation failed: mount hook function failure: mount {source}->{inside} "
                      f"error: mount source {source} doesn't exist", file=sys.stderr)
                return 255
            mounts[inside] = source
    return _fmriprep(args, mounts, env, settings)


# --- fMRIPrep ------------------------------------------------------------------------------------------


def _host(path: str, mounts: dict[str, str] | None) -> Path | None:
    """Where a path fMRIPrep sees lies on the host; None in a container where no mount holds it."""
    if mounts is None:
        return Path(path)
    for inside, host in sorted(mounts.items(), key=lambda kv: -len(kv[0])):
        if path == inside or path.startswith(inside.rstrip("/") + "/"):
            return Path(host + path[len(inside):])
    return None


def _parse(args: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """fMRIPrep's positional arguments and options (name to values), liberally."""
    positional, options, i = [], {}, 0
    while i < len(args):
        name, sep, value = args[i].partition("=")
        i += 1
        if not name.startswith("-"):
            positional.append(args[i - 1])
            continue
        values = [value] if sep else []
        # An unknown option takes the words after it, unless positional arguments are still due.
        takes = 1 if name in _FMRIPREP_VALUED else len(args) if name in _FMRIPREP_LISTS or len(positional) >= 3 else 0
        while not sep and i < len(args) and len(values) < takes and not args[i].startswith("-"):
            values.append(args[i])
            i += 1
        options[name] = values
    return positional, options


def _one(options: dict, *names: str) -> str | None:
    """The value of the first of ``names`` given with a value (an option's aliases), or None."""
    return next((options[n][0] for n in names if options.get(n)), None)


def _log(message: str) -> None:
    print(f"261124-12:00:00,000 nipype.workflow IMPORTANT:\n\t {message}", flush=True)  # nipype's format


def _license(options: dict, mounts: dict | None, env: dict) -> Path | None:
    """The license where fMRIPrep looks: --fs-license-file, $FS_LICENSE, $FREESURFER_HOME/license.txt."""
    home = env.get("FREESURFER_HOME", "/opt/freesurfer" if mounts is not None else "")
    for candidate in (_one(options, "--fs-license-file"), env.get("FS_LICENSE"), home and f"{home}/license.txt"):
        host = _host(candidate, mounts) if candidate else None
        if host is not None and host.is_file():
            return host
    return None


def _fmriprep(args: list[str], mounts: dict[str, str] | None, env: dict, settings: dict) -> int:
    if args[:1] == ["--version"]:
        print(f"fMRIPrep v{settings['version']}")
        return 0
    positional, options = _parse(args)
    labels = [label.removeprefix("sub-") for label in options.get("--participant-label", [])
              or options.get("--participant_label", [])]
    if len(positional) != 3 or positional[2] != "participant" or not labels:
        print(f"fmriprep: error: expected bids_dir output_dir participant --participant-label L, got {args}",
              file=sys.stderr)
        return 2
    bids, out = _host(positional[0], mounts), _host(positional[1], mounts)
    if bids is None or not bids.is_dir():
        print(f"fmriprep: error: argument bids_dir: Path does not exist: <{positional[0]}>.", file=sys.stderr)
        return 2
    if _license(options, mounts, env) is None:
        print(_LICENSE_ERROR, file=sys.stderr)
        return 1
    needed, given = int(os.environ.get("STANDIN_MIN_MEM_MB", "0")), _one(options, "--mem-mb", "--mem_mb", "--mem")
    if given is not None and int(given) < needed:  # without --mem-mb fMRIPrep may use all the memory there is
        print(f"Killed (out of memory: this run needs {needed} MB)", file=sys.stderr)
        return 137
    _log(f"Running fMRIPrep version {settings['version']} (stand-in) for participant(s) {labels}; "
         f"BIDS dataset path: {positional[0]}, output path: {positional[1]}")
    modes, status = json.loads(os.environ.get("STANDIN_MODE") or "{}"), 0
    for label in labels:
        mode = modes.get(label, modes.get(f"sub-{label}", settings["mode"]))
        if mode not in MODES:
            print(f"stand-in: STANDIN_MODE gives {mode!r} for {label}; expected one of {list(MODES)}", file=sys.stderr)
            return 2
        status = max(status, _participant(label, mode, (bids, out, positional[1]), options, mounts, settings))
    if status == 0:
        _log("fMRIPrep finished successfully!")
    return status


def _participant(label: str, mode: str, paths: tuple, options: dict, mounts: dict | None, settings: dict) -> int:
    """Act as fMRIPrep for one participant; ``paths``: host BIDS root, host output (None: unmounted), shown output."""
    bids, out, out_shown = paths
    if not (bids / f"sub-{label}").is_dir():
        print(f"BIDSError: Could not find participants [{label}] in {bids}", file=sys.stderr)
        return 1
    if mode == "nothing" or out is None:  # out is None: written inside the container, lost with it
        return 0
    query, shown = {}, _one(options, "--bids-filter-file")
    if shown is not None:
        filter_file = _host(shown, mounts)
        if filter_file is None or not filter_file.is_file():
            print(f"fmriprep: error: argument --bids-filter-file: Path does not exist: <{shown}>.", file=sys.stderr)
            return 2
        query = json.loads(filter_file.read_text()).get("bold", {})
    shown = _one(options, "-w", "--work-dir")
    work = _host(shown, mounts) if shown else None
    if work is not None:
        (work / f"fmriprep_{'_'.join(settings['version'].split('.')[:2])}_wf").mkdir(parents=True, exist_ok=True)
    _description(out, settings["version"], label)
    if mode == "crash":
        return _crash(out, out_shown, label)
    runs = [raw for raw in _bold_runs(bids, label) if matches(entities(raw), query)]
    if not runs:
        print(f"RuntimeError: No BOLD images found for participant {label} and task <all tasks> (BIDS filter "
              f"{query}). All workflows require BOLD images.", file=sys.stderr)
        return 1
    spaces = options.get("--output-spaces") or ["MNI152NLin2009cAsym"]
    n_dummy = int(_one(options, "--dummy-scans") or 1)
    for raw in runs:
        _log(f"Preprocessing {raw.relative_to(bids)}")
        _write_run(raw, bids, out / raw.parent.relative_to(bids), label, spaces, n_dummy, settings["cache"])
    return 0


def _description(out: Path, version: str, label: str) -> None:
    # fMRIPrep writes these in its final reporting step, which runs whether the workflow failed or not.
    out.mkdir(parents=True, exist_ok=True)
    (out / "dataset_description.json").write_text(json.dumps(
        {"Name": "fMRIPrep - fMRI PREProcessing workflow", "BIDSVersion": "1.8.0", "DatasetType": "derivative",
         "GeneratedBy": [{"Name": "fMRIPrep", "Version": version, "CodeURL": "https://github.com/nipreps/fmriprep"}]},
        indent=2))
    (out / f"sub-{label}.html").write_text(f"<html><body><h1>sub-{label} (fMRIPrep stand-in)</h1></body></html>\n")


def _crash(out: Path, out_shown: str, label: str) -> int:
    relative = (f"sub-{label}/log/20261124-120000_{uuid.uuid4()}/"
                f"crash-20261124-120000-user-bold_reg-{uuid.uuid4()}.txt")
    trace = ("Traceback (most recent call last):\n  File \"/opt/conda/lib/python3.12/site-packages/nipype/pipeline/"
             "plugins/multiproc.py\", line 67, in run_node\n    result['result'] = node.run(updatehash=updatehash)\n"
             f"RuntimeError: Command:\nbbregister --s sub-{label} --bold --init-header\nReturn code: 1\n")
    (out / relative).parent.mkdir(parents=True, exist_ok=True)
    (out / relative).write_text(f"Node: fmriprep_wf.sub_{label}_wf.bold_reg_wf.bbreg_wf.bbregister\n\n{trace}")
    print(f"261124-12:00:01,000 nipype.workflow ERROR:\n\t Node bbregister failed to run on host standin.\n"
          f"261124-12:00:01,001 nipype.workflow ERROR:\n\t Saving crash info to {out_shown}/{relative}\n{trace}"
          "261124-12:00:02,000 nipype.workflow CRITICAL:\n\t fMRIPrep failed: 1 nodes failed\n"
          "Traceback (most recent call last):\n  File \"/opt/conda/lib/python3.12/site-packages/fmriprep/cli/run.py\","
          " line 163, in main\n    fmriprep_wf.run(**_plugin)\n"
          "RuntimeError: Workflow did not execute cleanly. Check log for details", file=sys.stderr)
    return 1


# --- BIDS --------------------------------------------------------------------------------------------

# BIDS file-name keys -> pybids entity names (a filter file's keys); run and echo are integers.
ENTITIES = {"sub": "subject", "ses": "session", "task": "task", "acq": "acquisition", "ce": "ceagent",
            "rec": "reconstruction", "dir": "direction", "run": "run", "echo": "echo", "part": "part"}


def _bold_runs(bids: Path, label: str) -> list[Path]:
    subject = bids / f"sub-{label}"
    return sorted([*subject.glob("func/*_bold.nii*"), *subject.glob("ses-*/func/*_bold.nii*")])


def entities(path: Path) -> dict:
    """pybids entities of a BIDS file, with ``datatype`` (its folder), ``suffix`` and ``extension``."""
    stem, dot, extension = path.name.partition(".")
    *pairs, suffix = stem.split("_")
    found = {"datatype": path.parent.name, "suffix": suffix, "extension": dot + extension}
    for key, _, value in (pair.partition("-") for pair in pairs):
        if key in ENTITIES:
            found[ENTITIES[key]] = int(value) if key in ("run", "echo") and value.isdigit() else value
    return found


def matches(found: dict, query: dict) -> bool:
    """Whether entities pass a pybids query: each key a value, a list of values, or null (absent)."""
    def same(have, wanted) -> bool:
        if wanted is None or have is None:
            return wanted is None and have is None
        if isinstance(have, int) and str(wanted).isdigit():
            return have == int(wanted)  # pybids: run 1 matches "01"
        return str(have) == str(wanted)

    return all(any(same(found.get(key), w) for w in (wanted if isinstance(wanted, list) else [wanted]))
               for key, wanted in query.items())


def sidecar(raw: Path, bids: Path) -> dict:
    """A run's JSON metadata by BIDS inheritance: every applicable ``*_bold.json``, the nearest winning."""
    own, parts = entities(raw), raw.parent.relative_to(bids).parts
    merged = {}
    for folder in [bids.joinpath(*parts[:depth]) for depth in range(len(parts) + 1)]:
        applicable = []
        for candidate in folder.glob("*_bold.json"):
            keys = set(entities(candidate)) - {"datatype", "suffix", "extension"}
            if all(own.get(k) == entities(candidate)[k] for k in keys):
                applicable.append((len(keys), candidate))
        for _, candidate in sorted(applicable):
            merged |= json.loads(candidate.read_text())
    return merged


# --- derivatives -------------------------------------------------------------------------------------

# Column order of fMRIPrep's confounds, as in the real example (shared/data/fmriprep_confounds_format_example);
# "#" stands for a family's numbered columns.
_EXPAND = ("", "_derivative1", "_power2", "_derivative1_power2")
_EXPAND_MEANS = ("", "_derivative1", "_derivative1_power2", "_power2")
CONFOUND_ORDER = (
    *[f"{base}{s}" for base in ("global_signal", "csf", "white_matter") for s in _EXPAND_MEANS],
    "csf_wm", "tcompcor", "std_dvars", "dvars", "framewise_displacement", "rmsd",
    "t_comp_cor_#", "c_comp_cor_#", "w_comp_cor_#", "a_comp_cor_#", "cosine#", "non_steady_state_outlier#",
    *[f"trans_x{s}" for s in _EXPAND], *[f"trans_y{s}" for s in _EXPAND_MEANS],
    *[f"{base}{s}" for base in ("trans_z", "rot_x", "rot_y", "rot_z") for s in _EXPAND], "motion_outlier#",
)
# Output spaces that are no template (fmriprep-docker's NONSTANDARD_REFERENCES, and surfaces): skipped.
_NOT_TEMPLATES = ("anat", "T1w", "run", "func", "sbref", "fsnative", "fsaverage", "fsaverage5", "fsaverage6", "fsLR")


def _confound_key(name: str) -> tuple[int, int]:
    if name in CONFOUND_ORDER:
        return CONFOUND_ORDER.index(name), 0
    family = name.rstrip("0123456789")
    return CONFOUND_ORDER.index(family + "#"), int(name[len(family):])


@dataclass(frozen=True)
class _Grid:
    """nilearn's MNI152 grid at one voxel size: affine (4, 4), mask bool (x, y, z), and in-mask tissue
    fractions gm, wm, csf float32 (n_voxels,) (``confounds_table`` reads ``wm`` and ``csf``)."""

    affine: object
    mask: object
    gm: object
    wm: object

    @property
    def csf(self):
        return (1.0 - self.gm - self.wm).clip(0.0, 1.0)


def _grid(size: int, cache: Path) -> _Grid:
    """The grid at ``size`` mm, built once per cache folder (importing nilearn costs seconds a call)."""
    import numpy as np

    path = cache / f"mni152_res-{size}.npz"
    if not path.is_file():
        from nilearn import datasets, image

        kwargs = {"target_affine": np.diag([float(size)] * 3), "interpolation": "nearest",
                  "force_resample": True, "copy_header": True}
        mask, gm, wm = (image.resample_img(img, **kwargs) for img in (
            datasets.load_mni152_brain_mask(resolution=1), datasets.load_mni152_gm_template(resolution=1),
            datasets.load_mni152_wm_template(resolution=1)))
        inside = np.asarray(mask.dataobj) > 0
        cache.mkdir(parents=True, exist_ok=True)
        partial = cache / f".{path.stem}.{os.getpid()}.npz"  # jobs run side by side: rename atomically
        np.savez(partial, affine=mask.affine, mask=inside, gm=np.asarray(gm.dataobj, np.float32)[inside],
                 wm=np.asarray(wm.dataobj, np.float32)[inside])
        os.replace(partial, path)
    with np.load(path) as data:
        return _Grid(data["affine"], data["mask"], data["gm"], data["wm"])


def _motion(rng, n_frames: int, mean_fd: float):
    """Head motion (n_frames, 6) in mm and rad: smooth random walks with a few jerks, mean FD ``mean_fd`` mm."""
    import numpy as np
    from scipy.ndimage import gaussian_filter1d

    from brainage.demo.confounds import FD_RADIUS_MM, framewise_displacement

    steps = gaussian_filter1d(rng.standard_normal((n_frames, 6)), sigma=2.0, axis=0)
    if n_frames > 1:
        jerks = rng.choice(np.arange(1, n_frames), size=max(1, n_frames // 40), replace=False)
        steps[jerks] += rng.normal(scale=3.0 * steps.std(), size=(len(jerks), 6))
    steps[:, 3:] /= FD_RADIUS_MM  # rotations (rad) whose arcs at the FD head radius match the shifts (mm)
    motion = np.cumsum(steps, axis=0)
    motion -= np.median(motion, axis=0)
    if n_frames < 2:
        return motion
    # Power's FD (50 mm radius) is linear in the motion's scale: scaling plants the mean exactly.
    return motion * (mean_fd / np.nanmean(framewise_displacement(motion)))


def _bold(grid: _Grid, motion, n_dummy: int, rng):
    """In-mask BOLD (n_frames, n_voxels) float32: tissue contrast x (1 + six smooth parcel signals + motion + noise)."""
    import numpy as np
    from scipy.ndimage import gaussian_filter1d

    n_frames, ijk = len(motion), np.argwhere(grid.mask)
    baseline = (300.0 + 600.0 * grid.gm + 400.0 * grid.wm).astype(np.float32)
    seeds = ijk[rng.choice(len(ijk), size=6, replace=False)]
    parcel = ((ijk[:, None, :] - seeds[None]) ** 2).sum(axis=-1).argmin(axis=1)  # Voronoi parcels
    signals = gaussian_filter1d(rng.standard_normal((n_frames, 6)), sigma=2.0, axis=0)
    signals /= signals.std(axis=0) + 1e-6
    bold = 1.0 + 0.004 * rng.standard_normal((n_frames, len(ijk)), dtype=np.float32)
    bold += (0.01 * signals[:, parcel]).astype(np.float32)
    shift = motion[:, :3] - motion[:, :3].mean(axis=0)  # ~0.5 % signal change per mm, signed per voxel
    bold += (shift @ (0.005 * rng.standard_normal((3, len(ijk))))).astype(np.float32)
    bold[:n_dummy] *= (1.0 + 0.5 * 0.5 ** np.arange(n_dummy, dtype=np.float32))[:, None]  # not yet steady
    return bold * baseline


def _save(data, grid: _Grid, tr: float, path: str) -> None:
    """Scatter in-mask values (..., n_voxels) onto the grid and save with fMRIPrep's header units."""
    import nibabel as nib
    import numpy as np

    volume = np.zeros(grid.mask.shape + data.shape[:-1], dtype=data.dtype)
    volume[grid.mask] = np.moveaxis(data, -1, 0)
    img = nib.Nifti1Image(volume, grid.affine)
    img.header.set_xyzt_units("mm", "sec")
    if volume.ndim == 4:
        img.header.set_zooms(img.header.get_zooms()[:3] + (tr,))
    nib.save(img, path)


def _write_run(raw: Path, bids: Path, func: Path, label: str, spaces: list[str], n_dummy: int, cache: Path) -> None:
    """fMRIPrep's derivatives of one BOLD run into ``func``: per template space, then the confounds."""
    import nibabel as nib
    import numpy as np

    from brainage.demo.confounds import confounds_table

    metadata, img = sidecar(raw, bids), nib.load(raw)
    n_frames = img.shape[3] if img.ndim == 4 else 1
    scale = 1000.0 if img.header.get_xyzt_units()[1] == "msec" else 1.0
    tr = float(metadata.get("RepetitionTime") or img.header.get_zooms()[3] / scale)
    n_dummy = min(n_dummy, max(n_frames - 2, 0))
    seed = int.from_bytes(hashlib.sha256(f"{label}/{raw.name}".encode()).digest()[:8], "little")
    planted = json.loads(os.environ.get("STANDIN_MEAN_FD") or "{}")
    motion = _motion(np.random.default_rng(seed), n_frames,
                     float(planted.get(label, planted.get(f"sub-{label}", DEFAULT_MEAN_FD_MM))))
    stem, native = raw.name.split("_bold.nii")[0], max(1, round(float(img.header.get_zooms()[0])))
    func.mkdir(parents=True, exist_ok=True)
    first = None
    for space in spaces:
        name, _, res = space.partition(":")
        if name in _NOT_TEMPLATES:
            continue
        res = "" if res == "res-native" else res
        grid = _grid(int(res.removeprefix("res-")) if res else native, cache)
        bold = _bold(grid, motion, n_dummy, np.random.default_rng(seed + 1))
        prefix = f"{func / stem}_space-{name}" + (f"_{res}" if res else "")
        _save(bold, grid, tr, f"{prefix}_desc-preproc_bold.nii.gz")
        Path(f"{prefix}_desc-preproc_bold.json").write_text(json.dumps(
            {"RepetitionTime": tr, "SkullStripped": False,
             "TaskName": metadata.get("TaskName", entities(raw).get("task")),
             "Sources": [f"bids:raw:{raw.relative_to(bids).as_posix()}"]}, indent=2))
        _save(np.ones(grid.wm.shape, np.uint8), grid, tr, f"{prefix}_desc-brain_mask.nii.gz")
        first = first or (grid, bold)
    grid, bold = first or (_grid(native, cache), None)  # confounds come from the BOLD, whatever the spaces
    bold = _bold(grid, motion, n_dummy, np.random.default_rng(seed + 1)) if bold is None else bold
    table, columns = confounds_table(grid, bold, motion, tr, n_dummy)
    table[sorted(table.columns, key=_confound_key)].to_csv(
        func / f"{stem}_desc-confounds_timeseries.tsv", sep="\t", index=False, na_rep="n/a")
    (func / f"{stem}_desc-confounds_timeseries.json").write_text(json.dumps(columns, indent=2))
