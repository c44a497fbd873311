"""Checks made before any fMRIPrep job is submitted: license, engine, image and BIDS input."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from brainage.errors import PreprocessError
from brainage.preprocess.command import FmriprepParams

LICENSE_HELP = (
    "FreeSurfer's license is free: register at https://surfer.nmr.mgh.harvard.edu/registration.html, "
    "save the license.txt you receive by e-mail, and set preprocess.fs_license to its path (or export "
    "FS_LICENSE=/path/to/license.txt)"
)
# What must be on PATH for each engine; docker needs both the wrapper and the docker client.
_EXECUTABLES = {
    "docker": ("fmriprep-docker", "docker"),
    "apptainer": ("apptainer",),
    "singularity": ("singularity",),
    "native": ("fmriprep",),
}
_INSTALL_HELP = {
    "fmriprep-docker": "it comes with brainage (pip install -e .); is the brainage environment active?",
    "docker": "install Docker (https://docs.docker.com/get-docker/) or choose preprocess.engine apptainer",
    "apptainer": "load it (e.g. `module load apptainer`) or choose another preprocess.engine",
    "singularity": "load it (e.g. `module load singularity`) or choose another preprocess.engine",
    "fmriprep": "install fMRIPrep and its tools (ANTs, FSL, AFNI, FreeSurfer, Connectome Workbench) "
                "or choose preprocess.engine docker or apptainer",
}


def license_file(configured: str | None, environ: dict[str, str] | None = None) -> Path:
    """The FreeSurfer license fMRIPrep will use, checked to exist, be a file, readable and non-empty.

    Parameters
    ----------
    configured : str or None
        ``preprocess.fs_license``; None falls back to the ``FS_LICENSE`` environment variable.
    environ : dict, optional
        The environment (default ``os.environ``).

    Raises
    ------
    PreprocessError
        With the reason and how to get a license.
    """
    environ = os.environ if environ is None else environ
    source = "preprocess.fs_license"
    if configured is None:
        configured, source = environ.get("FS_LICENSE"), "the FS_LICENSE environment variable"
    if not configured:
        raise PreprocessError(
            "fMRIPrep needs a FreeSurfer license file, and none is set (preprocess.fs_license is null "
            f"and FS_LICENSE is not set). {LICENSE_HELP}"
        )
    path = Path(configured).expanduser()
    if not path.exists():
        problem = "does not exist"
    elif not path.is_file():
        problem = "is not a file"
    elif not os.access(path, os.R_OK):
        problem = "is not readable by you"
    elif path.stat().st_size == 0:
        problem = "is empty"
    else:
        return path
    raise PreprocessError(f"the FreeSurfer license file {path} (from {source}) {problem}. {LICENSE_HELP}")


def check_engine(params: FmriprepParams, environ: dict[str, str] | None = None) -> dict[str, str]:
    """Check that the engine's executables are on PATH and a container image file exists.

    A docker image is not looked up: ``docker`` pulls a missing tag on first use, and asking
    the daemon at DAG build would need it running on the submit host.

    Returns
    -------
    dict
        Executable name -> resolved path.

    Raises
    ------
    PreprocessError
        Naming the missing executable or image and what to do.
    """
    path_var = (os.environ if environ is None else environ).get("PATH", "")
    found = {}
    for name in _EXECUTABLES[params.engine]:
        where = shutil.which(name, path=path_var)
        if where is None:
            raise PreprocessError(
                f"preprocess.engine is {params.engine}, but `{name}` is not on PATH: {_INSTALL_HELP[name]}"
            )
        found[name] = where
    if params.engine in ("apptainer", "singularity"):
        image = Path(params.image_name).expanduser()
        if not image.is_file():
            raise PreprocessError(
                f"the fMRIPrep image {image} (preprocess.image) does not exist; build it once with "
                f"`{params.engine} build {image} docker://nipreps/fmriprep:{params.version}`"
            )
    return found


def check_bids_dir(path: str | os.PathLike, where: str) -> Path:
    """A BIDS input folder: it must exist and hold at least one ``sub-*`` folder.

    Raises
    ------
    PreprocessError
        Naming the folder and ``where`` it was configured.
    """
    path = Path(path)
    if not path.is_dir():
        raise PreprocessError(f"the BIDS folder {path} ({where}) does not exist")
    if not any(p.is_dir() for p in path.glob("sub-*")):
        raise PreprocessError(f"the BIDS folder {path} ({where}) holds no sub-* folder")
    return path


def check_setup(params: dict, environ: dict[str, str] | None = None) -> dict:
    """Every check that must pass before an fMRIPrep job is submitted (called at DAG build).

    Parameters
    ----------
    params : dict
        The ``preprocess`` config section.
    environ : dict, optional
        The environment (default ``os.environ``).

    Returns
    -------
    dict
        ``{"license": Path, "executables": {name: path}}``.
    """
    parsed = FmriprepParams.from_dict(params)
    return {
        "license": license_file(parsed.fs_license, environ),
        "executables": check_engine(parsed, environ),
    }
