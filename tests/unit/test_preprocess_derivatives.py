"""brainage.preprocess.derivatives: after a job, fMRIPrep's evidence on failure and a record on success."""

import json
import logging

import pytest

from brainage.errors import PreprocessError
from brainage.preprocess.__main__ import main
from brainage.preprocess.derivatives import check_derivatives, crash_files, log_tail, version_run

LABEL = "sub-0010001"


def _outputs(tmp_path, version="25.2.7", names=("bold.nii.gz", "bold.json", "mask.nii.gz", "conf.tsv")):
    out = tmp_path / "fmriprep"
    files = []
    for name in names:
        path = out / LABEL / "func" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
        files.append(path)
    (out / "dataset_description.json").write_text(json.dumps(
        {"Name": "fMRIPrep - fMRI PREProcessing workflow", "GeneratedBy": [{"Name": "fMRIPrep", "Version": version}]}))
    log = tmp_path / "fmriprep.log"
    log.write_text("".join(f"line {i}\n" for i in range(40)))
    return out, files, log


def _check(tmp_path, out, files, log, exit_code=0):
    return check_derivatives(LABEL, exit_code, files, log, [out / LABEL, tmp_path / "work"], "25.2.7",
                             out / "dataset_description.json", tmp_path / "record.json",
                             {"engine": "docker", "image": "nipreps/fmriprep:25.2.7", "command": "fmriprep-docker …"})


def test_complete_derivatives_are_recorded_with_the_version_run(tmp_path):
    out, files, log = _outputs(tmp_path)
    record = _check(tmp_path, out, files, log)
    assert json.loads((tmp_path / "record.json").read_text()) == record
    assert record["fmriprep_version"] == "25.2.7" and record["engine"] == "docker"
    assert record["derivatives"] == [str(f) for f in files]


def test_other_version_is_recorded_as_run_and_warned(tmp_path, caplog):
    out, files, log = _outputs(tmp_path, version="24.1.1")
    with caplog.at_level(logging.WARNING):
        record = _check(tmp_path, out, files, log)
    assert record["fmriprep_version"] == "24.1.1" and record["pinned_version"] == "25.2.7"
    assert "fMRIPrep 24.1.1 ran, but preprocess.version pins 25.2.7" in caplog.text


def test_missing_derivatives_show_the_log_tail_and_crash_files(tmp_path):
    out, files, log = _outputs(tmp_path)
    files[2].unlink()
    crash = out / LABEL / "log" / "20261124-120000_abc" / "crash-20261124-120001-root-bold_reg-1.txt"
    crash.parent.mkdir(parents=True)
    crash.write_text("Traceback")
    with pytest.raises(PreprocessError) as err:
        _check(tmp_path, out, files, log)
    text = str(err.value)
    assert text.startswith(f"fMRIPrep finished for {LABEL} (exit code 0) but left no usable derivatives.")
    assert f"  {files[2]}" in text and str(files[0]) not in text
    assert f"Last 25 lines of fMRIPrep's log {log}:" in text
    assert "  | line 15" in text and "  | line 39" in text and "line 14\n" not in text
    assert f"Crash files (1; the newest first" in text and str(crash) in text
    assert "The working directory is kept" in text
    assert not (tmp_path / "record.json").exists()


def test_failed_exit_code_fails_even_with_files(tmp_path):
    out, files, log = _outputs(tmp_path)
    log.unlink()
    with pytest.raises(PreprocessError, match=rf"fMRIPrep failed for {LABEL} \(exit code 137\)") as err:
        _check(tmp_path, out, files, log, exit_code=137)
    assert "is empty or missing" in str(err.value) and "No crash files under" in str(err.value)


def test_empty_file_counts_as_missing(tmp_path):
    out, files, log = _outputs(tmp_path)
    files[0].write_text("")
    with pytest.raises(PreprocessError, match="Missing"):
        _check(tmp_path, out, files, log)


def test_helpers(tmp_path):
    assert log_tail(tmp_path / "none.log") == [] and crash_files([tmp_path / "none"]) == []
    bad = tmp_path / "dd.json"
    bad.write_text("{not json")
    assert version_run(bad) is None and version_run(tmp_path / "none.json") is None
    bad.write_text(json.dumps({"GeneratedBy": [{"Name": "fMRIPost"}]}))
    assert version_run(bad) is None


def test_cli_exit_codes(tmp_path, capsys):
    out, files, log = _outputs(tmp_path)
    args = ["check", "--participant-id", LABEL, "--expect", *map(str, files), "--log", str(log),
            "--crash-search", str(out / LABEL), "--version", "25.2.7", "--description",
            str(out / "dataset_description.json"), "--record-out", str(tmp_path / "rec.json"),
            "--engine", "native", "--command", "fmriprep …"]
    assert main([*args, "--exit-code", "0"]) == 0
    assert json.loads((tmp_path / "rec.json").read_text())["engine"] == "native"
    assert main([*args, "--exit-code", "1"]) == 1
    assert f"fMRIPrep failed for {LABEL} (exit code 1)" in capsys.readouterr().err
