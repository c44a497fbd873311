"""brainage.preprocess.qc: motion metrics from fMRIPrep confounds (the real example included) and QC exclusions."""

import csv

import pytest

from brainage.preprocess.qc import motion_exclusions, motion_metrics

QC = {"max_mean_fd": 0.55, "high_motion_fd": 0.2, "max_high_motion_fraction": None, "max_mean_std_dvars": None}


def _column(path, name):
    """One column read with the csv module (a code path independent of the one under test)."""
    with open(path, newline="") as handle:
        return [None if row[name] == "n/a" else float(row[name]) for row in csv.DictReader(handle, delimiter="\t")]


def test_real_fmriprep_confounds(shared_data):
    path = shared_data / "fmriprep_confounds_format_example" / "test-v21_desc-confounds_timeseries.tsv"
    metrics = motion_metrics(path)
    fd = _column(path, "framewise_displacement")
    values = [v for v in fd if v is not None]
    assert fd[0] is None and metrics["fd"] == fd  # fMRIPrep's first frame has no displacement
    assert metrics["mean_fd"] == pytest.approx(sum(values) / len(values))
    assert metrics["max_fd"] == pytest.approx(max(values))
    dvars = [v for v in _column(path, "std_dvars") if v is not None]
    assert metrics["mean_std_dvars"] == pytest.approx(sum(dvars) / len(dvars))
    raw = [v for v in _column(path, "dvars") if v is not None]
    assert metrics["mean_dvars"] == pytest.approx(sum(raw) / len(raw))


def test_hand_computed_and_missing_columns(tmp_path):
    path = tmp_path / "sub-01_task-rest_desc-confounds_timeseries.tsv"
    path.write_text("trans_x\tframewise_displacement\tstd_dvars\n0\tn/a\tn/a\n0\t0.1\t1.0\n0\t0.5\t2.0\n0\t0.3\tn/a\n")
    metrics = motion_metrics(path)
    assert metrics["fd"] == [None, 0.1, 0.5, 0.3]
    assert metrics["mean_fd"] == pytest.approx(0.3) and metrics["max_fd"] == pytest.approx(0.5)
    assert metrics["mean_std_dvars"] == pytest.approx(1.5) and metrics["mean_dvars"] is None
    path.write_text("trans_x\n0\n1\n")
    assert motion_metrics(path) == {"fd": None, "mean_fd": None, "max_fd": None, "mean_std_dvars": None,
                                    "mean_dvars": None}
    path.write_text("framewise_displacement\nn/a\nn/a\n")
    assert motion_metrics(path)["mean_fd"] is None


def _record(mean_fd=0.1, fd=None, dvars=None, status="included"):
    return {"status": status, "mean_fd": mean_fd, "fd": fd, "mean_std_dvars": dvars}


def test_each_threshold_excludes_with_its_reason():
    records = {"sub-a": _record(0.56), "sub-b": _record(0.55), "sub-c": _record(None),
               "sub-d": _record(0.9, status="excluded")}
    table = motion_exclusions(records, QC)
    assert table.to_dict("records") == [
        {"participant_id": "sub-a", "stage": "qc", "reason": "mean FD 0.560 mm > qc.max_mean_fd 0.55 mm"}]
    # 3 of 4 frames above 0.2 mm (the n/a frame does not count); 0.75 > 0.5.
    fd = [None, 0.3, 0.25, 0.1, 0.4]
    params = dict(QC, max_high_motion_fraction=0.5, max_mean_std_dvars=1.2)
    table = motion_exclusions({"sub-e": _record(0.2, fd=fd, dvars=1.3)}, params)
    assert table.reason.iloc[0] == ("75.0% of frames with FD > 0.2 mm > qc.max_high_motion_fraction 0.5; "
                                    "mean std DVARS 1.300 > qc.max_mean_std_dvars 1.2")
    assert motion_exclusions({"sub-e": _record(0.2, fd=fd, dvars=1.3)},
                             dict(params, max_high_motion_fraction=0.75, max_mean_std_dvars=None)).empty


def test_disabled_thresholds_exclude_nobody():
    off = {"max_mean_fd": None, "high_motion_fd": 0.2, "max_high_motion_fraction": None, "max_mean_std_dvars": None}
    table = motion_exclusions({"sub-a": _record(5.0, fd=[1.0, 2.0], dvars=9.0)}, off)
    assert table.empty and list(table.columns) == ["participant_id", "stage", "reason"]
