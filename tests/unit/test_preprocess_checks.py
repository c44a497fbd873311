"""brainage.preprocess.checks: what a user sees before any fMRIPrep job is submitted."""

import os

import pytest

from brainage.errors import ConfigError, PreprocessError
from brainage.preprocess.checks import check_bids_dir, check_engine, check_setup, license_file
from brainage.preprocess.command import FmriprepParams

PARAMS = {"engine": "docker", "version": "25.2.7", "image": None, "fs_license": None, "work_dir": "w",
          "fs_reconall": False, "skip_bids_validation": True, "extra_args": []}


def _license(tmp_path, text="user@example.org\n12345\n *CxYz\n FSabc\n"):
    path = tmp_path / "license.txt"
    path.write_text(text)
    return path


def _bin(tmp_path, *names):
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / name).write_text("#!/bin/sh\nexit 0\n")
        (folder / name).chmod(0o755)
    return str(folder)


def test_license_from_config_or_environment(tmp_path):
    path = _license(tmp_path)
    assert license_file(str(path), environ={}) == path
    assert license_file(None, environ={"FS_LICENSE": str(path)}) == path


def test_no_license_says_how_to_get_one():
    with pytest.raises(PreprocessError, match=r"needs a FreeSurfer license file, and none is set "
                                              r"\(preprocess.fs_license is null and FS_LICENSE is not set\)"
                                              r".*https://surfer.nmr.mgh.harvard.edu/registration.html"):
        license_file(None, environ={})


@pytest.mark.parametrize("case, problem", [("missing", "does not exist"), ("folder", "is not a file"),
                                           ("empty", "is empty")])
def test_bad_license_file_is_named_with_its_source(tmp_path, case, problem):
    path = {"missing": tmp_path / "nope.txt", "folder": tmp_path, "empty": _license(tmp_path, "")}[case]
    with pytest.raises(PreprocessError, match=rf"license file {path} \(from preprocess.fs_license\) {problem}"):
        license_file(str(path), environ={})
    with pytest.raises(PreprocessError, match=r"\(from the FS_LICENSE environment variable\)"):
        license_file(None, environ={"FS_LICENSE": str(path)})


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable_license(tmp_path):
    path = _license(tmp_path)
    path.chmod(0)
    with pytest.raises(PreprocessError, match="is not readable by you"):
        license_file(str(path), environ={})


@pytest.mark.parametrize("engine, present, missing", [
    ("docker", ["docker"], "fmriprep-docker"), ("docker", ["fmriprep-docker"], "docker"),
    ("apptainer", [], "apptainer"), ("singularity", ["apptainer"], "singularity"), ("native", [], "fmriprep")])
def test_missing_engine_is_named(tmp_path, engine, present, missing):
    params = FmriprepParams.from_dict({**PARAMS, "engine": engine, "image": str(tmp_path / "f.sif")})
    with pytest.raises(PreprocessError, match=rf"preprocess.engine is {engine}, but `{missing}` is not on PATH"):
        check_engine(params, environ={"PATH": _bin(tmp_path, *present)})


def test_engine_found_and_image_checked(tmp_path):
    path = _bin(tmp_path, "fmriprep-docker", "docker", "apptainer")
    found = check_engine(FmriprepParams.from_dict(PARAMS), environ={"PATH": path})
    assert found == {"fmriprep-docker": f"{path}/fmriprep-docker", "docker": f"{path}/docker"}
    image = tmp_path / "fmriprep-25.2.7.sif"
    params = FmriprepParams.from_dict({**PARAMS, "engine": "apptainer", "image": str(image)})
    with pytest.raises(PreprocessError, match=rf"the fMRIPrep image {image} \(preprocess.image\) does not exist; "
                                              rf"build it once with `apptainer build {image} "
                                              r"docker://nipreps/fmriprep:25.2.7`"):
        check_engine(params, environ={"PATH": path})
    image.write_bytes(b"sif")
    assert check_engine(params, environ={"PATH": path}) == {"apptainer": f"{path}/apptainer"}


def test_check_setup_runs_every_check(tmp_path):
    path = _bin(tmp_path, "fmriprep")
    lic = _license(tmp_path)
    ready = check_setup({**PARAMS, "engine": "native", "fs_license": str(lic)}, environ={"PATH": path})
    assert ready == {"license": lic, "executables": {"fmriprep": f"{path}/fmriprep"}}
    with pytest.raises(PreprocessError, match="license"):
        check_setup({**PARAMS, "engine": "native"}, environ={"PATH": path})
    with pytest.raises(ConfigError, match="preprocess.image is empty"):
        check_setup({**PARAMS, "engine": "apptainer", "fs_license": str(lic)}, environ={"PATH": path})


def test_bids_dir_must_hold_subjects(tmp_path):
    with pytest.raises(PreprocessError, match=rf"the BIDS folder {tmp_path / 'x'} \(datasets\[0\]\) does not exist"):
        check_bids_dir(tmp_path / "x", "datasets[0]")
    with pytest.raises(PreprocessError, match=r"holds no sub-\* folder"):
        check_bids_dir(tmp_path, "datasets[0]")
    (tmp_path / "sub-01").mkdir()
    assert check_bids_dir(tmp_path, "datasets[0]") == tmp_path
