"""brainage.preprocess.command: the exact fMRIPrep command of each engine, and the one-run BIDS filter."""

import subprocess

import pytest

from brainage.errors import ConfigError
from brainage.preprocess.command import FmriprepParams, SubjectJob, bids_filter, fmriprep_command

BASE = {"engine": "docker", "version": "25.2.7", "image": None, "fs_license": "/opt/fs/license.txt",
        "work_dir": "work/fmriprep", "fs_reconall": False, "skip_bids_validation": True, "extra_args": [],
        "templateflow": {"home": "resources/templateflow"}}
JOB = SubjectJob(label="0010001", bids_dir="resources/indi/adhd200/NYU", output_dir="results/fmriprep",
                 work_dir="work/fmriprep/sub-0010001", license_file="/opt/fs/license.txt",
                 templateflow_home="resources/templateflow", output_space="MNI152NLin2009cAsym:res-2")
FMRIPREP_ARGS = ("participant --participant-label 0010001 --bids-filter-file {filter} -w {work}"
                 " --output-spaces MNI152NLin2009cAsym:res-2 --notrack")


def _params(**changes):
    return FmriprepParams.from_dict({**BASE, **changes})


def _argv(command: str, engine: str, cwd) -> list[str]:
    """The argv bash would pass to ``engine`` (a shell function printing its arguments stands in)."""
    script = f'{engine}() {{ printf "%s\\n" "$@"; }}; env() {{ printf "%s\\n" "$@"; }}; {command}'
    out = subprocess.run(["bash", "-c", script], cwd=cwd, capture_output=True, text=True, check=True).stdout
    return out.splitlines()


def test_bids_filter_pins_exactly_one_run():
    assert bids_filter("ses-1_task-rest_acq-2_run-1") == {"bold": {
        "datatype": "func", "suffix": "bold", "session": "1", "task": "rest", "acquisition": "2", "run": 1}}
    assert bids_filter("task-rest") == {"bold": {"datatype": "func", "suffix": "bold", "task": "rest"}}
    assert bids_filter("ses-BAS1_task-rest_acq-645")["bold"]["acquisition"] == "645"


@pytest.mark.parametrize("entities", ["task", "foo-1_task-rest", "task-"])
def test_bids_filter_rejects_what_it_cannot_express(entities):
    with pytest.raises(ConfigError, match="cannot build a BIDS filter"):
        bids_filter(entities)


def test_docker_command_goes_through_fmriprep_docker_without_a_tty():
    expected = ("fmriprep-docker resources/indi/adhd200/NYU results/fmriprep "
                + FMRIPREP_ARGS.format(filter="work/fmriprep/sub-0010001/bids_filter.json",
                                       work="work/fmriprep/sub-0010001")
                + " --fs-license-file /opt/fs/license.txt --fs-no-reconall --skip-bids-validation"
                " --no-tty -i nipreps/fmriprep:25.2.7")
    assert fmriprep_command(_params(), JOB) == expected
    assert fmriprep_command(_params(image="my/fmriprep:patched"), JOB).endswith("-i my/fmriprep:patched")


def test_apptainer_command_binds_everything_with_absolute_host_paths(tmp_path):
    command = fmriprep_command(_params(engine="apptainer", image="/img/fmriprep-25.2.7.sif"), JOB)
    argv = _argv(command, "apptainer", tmp_path)
    assert argv[:4] == ["run", "--cleanenv", "--env", "TEMPLATEFLOW_HOME=/templateflow"]
    binds = [argv[i + 1] for i, word in enumerate(argv) if word == "-B"]
    assert binds == [f"{tmp_path}/resources/indi/adhd200/NYU:/data:ro", f"{tmp_path}/results/fmriprep:/out",
                     f"{tmp_path}/work/fmriprep/sub-0010001:/work",
                     "/opt/fs/license.txt:/opt/freesurfer/license.txt:ro",
                     f"{tmp_path}/resources/templateflow:/templateflow:ro"]
    rest = argv[argv.index("/img/fmriprep-25.2.7.sif") + 1:]
    assert " ".join(rest) == ("/data /out " + FMRIPREP_ARGS.format(filter="/work/bids_filter.json", work="/work")
                              + " --fs-license-file /opt/freesurfer/license.txt --fs-no-reconall"
                              " --skip-bids-validation")


def test_singularity_uses_its_own_executable_and_paths_with_spaces_survive(tmp_path):
    job = SubjectJob(**{**JOB.__dict__, "bids_dir": "my data/NYU", "templateflow_home": None})
    argv = _argv(fmriprep_command(_params(engine="singularity", image="/img/f.sif"), job), "singularity", tmp_path)
    assert argv[:2] == ["run", "--cleanenv"] and "--env" not in argv  # no templateflow home: none bound
    assert f"{tmp_path}/my data/NYU:/data:ro" in argv


def test_native_command_sets_templateflow_home(tmp_path):
    argv = _argv(fmriprep_command(_params(engine="native"), JOB), "fmriprep", tmp_path)
    assert argv[0] == f"TEMPLATEFLOW_HOME={tmp_path}/resources/templateflow"
    assert argv[1:3] == ["fmriprep", "resources/indi/adhd200/NYU"]


def test_every_option_changes_the_command():
    plain = fmriprep_command(_params(), JOB)
    assert "--fs-no-reconall" not in fmriprep_command(_params(fs_reconall=True), JOB)
    assert "--skip-bids-validation" not in fmriprep_command(_params(skip_bids_validation=False), JOB)
    assert fmriprep_command(_params(extra_args=["--dummy-scans", "4"]), JOB) == plain.replace(
        " --no-tty", " --dummy-scans 4 --no-tty")
    assert "nipreps/fmriprep:24.1.1" in fmriprep_command(_params(version="24.1.1"), JOB)


def test_engine_and_image_errors_say_what_to_do():
    with pytest.raises(ConfigError, match=r"preprocess.engine is 'podman'; expected one of"):
        _params(engine="podman")
    with pytest.raises(ConfigError, match=r"preprocess.image is empty.*apptainer build fmriprep-25.2.7.sif "
                                          r"docker://nipreps/fmriprep:25.2.7"):
        _params(engine="apptainer")
    assert _params(engine="native").image_name is None
