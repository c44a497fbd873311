"""The fMRIPrep command line of one subject, for each engine (docker, apptainer/singularity, native)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, fields
from pathlib import PurePosixPath

from brainage.errors import ConfigError

ENGINES = ("docker", "apptainer", "singularity", "native")
# Where the host folders appear inside an Apptainer/Singularity container. fmriprep-docker
# chooses its own (/data, /out, /scratch, /tmp/bids_filter.json) and is left to do so.
IN_CONTAINER = {
    "bids": "/data",
    "out": "/out",
    "work": "/work",
    "license": "/opt/freesurfer/license.txt",
    "templateflow": "/templateflow",
}
FILTER_NAME = "bids_filter.json"
# BIDS file-name keys -> the pybids entity names a BIDS filter file uses (BIDS spec, appendix
# "Entities"; fMRIPrep docs, "--bids-filter-file"). Run is an integer in pybids.
_ENTITY_NAMES = {
    "ses": "session",
    "task": "task",
    "acq": "acquisition",
    "ce": "ceagent",
    "rec": "reconstruction",
    "dir": "direction",
    "run": "run",
    "echo": "echo",
    "part": "part",
}


@dataclass(frozen=True)
class FmriprepParams:
    """The ``preprocess`` config section (schema defaults filled in), minus ``templateflow``."""

    engine: str
    version: str
    image: str | None
    fs_license: str | None
    work_dir: str
    fs_reconall: bool
    skip_bids_validation: bool
    extra_args: tuple[str, ...]

    @classmethod
    def from_dict(cls, params: dict) -> FmriprepParams:
        """Build from the config section; unknown engines and a missing container image are errors."""
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in params.items() if k in names}
        values["extra_args"] = tuple(values.get("extra_args", ()))
        obj = cls(**values)
        if obj.engine not in ENGINES:
            raise ConfigError(f"preprocess.engine is {obj.engine!r}; expected one of {list(ENGINES)}")
        if obj.engine in ("apptainer", "singularity") and not obj.image:
            raise ConfigError(
                f"preprocess.engine is {obj.engine} but preprocess.image is empty; set it to the image "
                f"file, e.g. built with `{obj.engine} build fmriprep-{obj.version}.sif "
                f"docker://nipreps/fmriprep:{obj.version}`"
            )
        return obj

    @property
    def image_name(self) -> str | None:
        """The image run: the docker tag pinned by ``version`` unless ``image`` names another."""
        if self.engine == "docker":
            return self.image or f"nipreps/fmriprep:{self.version}"
        return self.image if self.engine != "native" else None


@dataclass(frozen=True)
class SubjectJob:
    """Host paths of one subject's fMRIPrep job (relative to the workflow directory or absolute).

    bids_dir : the BIDS root holding ``sub-<label>/``.
    output_dir : fMRIPrep's output folder (the derivatives root, shared by all subjects).
    work_dir : this subject's persistent working folder; the BIDS filter file is written in it.
    license_file : the FreeSurfer license.
    templateflow_home : the prefetched TemplateFlow home, or None (docker: the image's own).
    output_space : e.g. ``MNI152NLin2009cAsym:res-2``.
    """

    label: str
    bids_dir: str
    output_dir: str
    work_dir: str
    license_file: str
    templateflow_home: str | None
    output_space: str

    @property
    def filter_file(self) -> str:
        return str(PurePosixPath(self.work_dir) / FILTER_NAME)


def bids_filter(entities: str) -> dict:
    """fMRIPrep's BIDS filter selecting exactly one BOLD run.

    Parameters
    ----------
    entities : str
        The run's file-name entities after ``sub-<label>_``, e.g. ``ses-1_task-rest_acq-2_run-1``.

    Returns
    -------
    dict
        ``{"bold": {"datatype": "func", "suffix": "bold", "session": "1", "task": "rest", ...}}``.
        Only the BOLD query is restricted: fMRIPrep may use any session's T1w.
    """
    query = {"datatype": "func", "suffix": "bold"}
    for part in entities.split("_"):
        key, sep, value = part.partition("-")
        if not sep or not value or key not in _ENTITY_NAMES:
            raise ConfigError(
                f"cannot build a BIDS filter from {entities!r}: {part!r} is not one of the entities "
                f"{sorted(_ENTITY_NAMES)} as key-value"
            )
        query[_ENTITY_NAMES[key]] = int(value) if key == "run" and value.isdigit() else value
    return {"bold": query}


def _fmriprep_args(params: FmriprepParams, job: SubjectJob, paths: dict[str, str]) -> list[str]:
    """fMRIPrep's own arguments, with ``paths`` as fMRIPrep sees them (host or in-container)."""
    args = [
        paths["bids"], paths["out"], "participant",
        "--participant-label", job.label,
        "--bids-filter-file", paths["filter"],
        "-w", paths["work"],
        "--output-spaces", job.output_space,
        "--notrack",
    ]
    if "license" in paths:
        args += ["--fs-license-file", paths["license"]]
    if not params.fs_reconall:
        args.append("--fs-no-reconall")
    if params.skip_bids_validation:
        args.append("--skip-bids-validation")
    return args + list(params.extra_args)


def _host(path: str, suffix: str = "") -> str:
    """A host path for a bind or an environment value, absolute when the job runs.

    Relative paths are anchored at ``$PWD`` (the workflow directory) by the shell, so the
    command text, a Snakemake rerun trigger, does not change when the project folder moves.
    """
    if PurePosixPath(path).is_absolute():
        return shlex.quote(path + suffix)
    return '"$PWD"/' + shlex.quote(path + suffix)


def fmriprep_command(params: FmriprepParams, job: SubjectJob) -> str:
    """The bash command that runs fMRIPrep for one subject.

    ``--nthreads``, ``--omp-nthreads`` and ``--mem-mb`` are left out: the rule appends them
    from its own threads and memory, which change per attempt and must not rerun the job.

    Parameters
    ----------
    params : FmriprepParams
    job : SubjectJob

    Returns
    -------
    str
        Shell text (quoted for bash).

        - docker: ``fmriprep-docker`` with ``--no-tty`` (no terminal under Snakemake or Slurm)
          and ``-i <image>``; it mounts the data, output, work dir, license and filter file.
        - apptainer/singularity: ``<engine> run --cleanenv`` with explicit binds and
          ``TEMPLATEFLOW_HOME`` set inside (``--cleanenv`` drops the host's environment).
        - native: ``fmriprep`` on PATH with ``TEMPLATEFLOW_HOME`` set.
    """
    if params.engine == "docker":
        host = {"bids": job.bids_dir, "out": job.output_dir, "work": job.work_dir,
                "filter": job.filter_file, "license": job.license_file}
        head = ["fmriprep-docker"]
        tail = ["--no-tty", "-i", params.image_name]
        return shlex.join(head + _fmriprep_args(params, job, host) + tail)
    if params.engine == "native":
        host = {"bids": job.bids_dir, "out": job.output_dir, "work": job.work_dir,
                "filter": job.filter_file, "license": job.license_file}
        env = (["env", "TEMPLATEFLOW_HOME=" + _host(job.templateflow_home)]
               if job.templateflow_home else [])
        return " ".join(env + [shlex.join(["fmriprep"] + _fmriprep_args(params, job, host))])
    return _container_command(params, job)


def _container_command(params: FmriprepParams, job: SubjectJob) -> str:
    inside = dict(IN_CONTAINER, filter=f"{IN_CONTAINER['work']}/{FILTER_NAME}")
    binds = [
        (job.bids_dir, inside["bids"], ":ro"),
        (job.output_dir, inside["out"], ""),
        (job.work_dir, inside["work"], ""),
        (job.license_file, inside["license"], ":ro"),
    ]
    head = [params.engine, "run", "--cleanenv"]
    if job.templateflow_home:
        binds.append((job.templateflow_home, inside["templateflow"], ":ro"))
        head += ["--env", f"TEMPLATEFLOW_HOME={inside['templateflow']}"]
    words = [shlex.join(head)]
    for src, dst, mode in binds:
        words += ["-B", _host(src, f":{dst}{mode}")]
    words.append(shlex.join([params.image_name] + _fmriprep_args(params, job, inside)))
    return " ".join(words)
