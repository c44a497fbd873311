"""brainage.preprocess.qc: motion metrics from fMRIPrep confounds (the real example included) and QC exclusions."""

import csv
import logging

import numpy as np
import pytest

from brainage.errors import ConfigError, InputDataError
from brainage.preprocess.qc import motion_exclusions, motion_metrics

QC = {"max_mean_fd": 0.55, "high_motion_fd": 0.2, "max_high_motion_fraction": None, "max_mean_std_dvars": None}
OFF = {"max_mean_fd": None, "high_motion_fd": 0.2, "max_high_motion_fraction": None, "max_mean_std_dvars": None}


def _column(path, name):
    """One column as float64 (NaN for n/a), read with the csv module: a code path independent of pandas."""
    with open(path, newline="") as handle:
        return np.array([np.nan if row[name] == "n/a" else float(row[name])
                         for row in csv.DictReader(handle, delimiter="\t")])


def test_real_fmriprep_confounds(shared_data):
    path = shared_data / "fmriprep_confounds_format_example" / "test-v21_desc-confounds_timeseries.tsv"
    metrics = motion_metrics(path)
    fd = _column(path, "framewise_displacement")
    assert len(metrics["fd"]) == fd.size == 30
    assert metrics["fd"][0] is None and np.isnan(fd[0])  # fMRIPrep's first frame has no displacement
    np.testing.assert_allclose(np.array(metrics["fd"][1:], dtype=float), fd[1:])
    assert metrics["mean_fd"] == pytest.approx(np.nanmean(fd))
    assert metrics["max_fd"] == pytest.approx(np.nanmax(fd))
    assert metrics["mean_std_dvars"] == pytest.approx(np.nanmean(_column(path, "std_dvars")))
    assert metrics["mean_dvars"] == pytest.approx(np.nanmean(_column(path, "dvars")))


def test_hand_computed_metrics(tmp_path):
    path = tmp_path / "sub-01_task-rest_desc-confounds_timeseries.tsv"
    path.write_text("trans_x\tframewise_displacement\tstd_dvars\n0\tn/a\tn/a\n0\t0.1\t1.0\n0\t0.5\t2.0\n0\t0.3\tn/a\n")
    metrics = motion_metrics(path)
    assert metrics["fd"] == [None, 0.1, 0.5, 0.3]
    # Over the 3 frames with a value, not the 4 frames: (0.1 + 0.5 + 0.3) / 3.
    assert metrics["mean_fd"] == pytest.approx(0.3) and metrics["max_fd"] == pytest.approx(0.5)
    assert metrics["mean_std_dvars"] == pytest.approx(1.5) and metrics["mean_dvars"] is None  # no dvars column
    assert metrics["fd_dvars_r"] is None  # no dvars column
    path.write_text("framewise_displacement\tdvars\nn/a\tn/a\nn/a\tn/a\n")
    assert motion_metrics(path) == {"fd": [None, None], "mean_fd": None, "max_fd": None, "mean_std_dvars": None,
                                    "mean_dvars": None, "fd_dvars_r": None}


def test_fd_dvars_correlation_hand_computed(tmp_path):
    # Frames 1-4 have both: FD (0.1, 0.2, 0.3, 0.6), DVARS (10, 12, 11, 20); frame 5 has no DVARS.
    path = tmp_path / "c.tsv"
    path.write_text("framewise_displacement\tdvars\nn/a\tn/a\n0.1\t10\n0.2\t12\n0.3\t11\n0.6\t20\n0.9\tn/a\n")
    fd, dvars = np.array([0.1, 0.2, 0.3, 0.6]), np.array([10.0, 12, 11, 20])
    expected = ((fd - fd.mean()) * (dvars - dvars.mean())).sum() / np.sqrt(
        ((fd - fd.mean()) ** 2).sum() * ((dvars - dvars.mean()) ** 2).sum())
    assert motion_metrics(path)["fd_dvars_r"] == pytest.approx(expected)
    assert expected == pytest.approx(0.94468528)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("trans_x\tstd_dvars\n0\tn/a\n",
         r"c\.tsv: expected a 'framewise_displacement' column .*found none among its 2"),
        ("framewise_displacement\nn/a\n0.1\nlots\n", r"c\.tsv: column 'framewise_displacement' line 4 holds 'lots', "
                                                     r"expected a finite number or n/a \(1 such cells\)"),
        ("framewise_displacement\tstd_dvars\nn/a\tn/a\n0.1\tinf\n", r"c\.tsv: column 'std_dvars' line 3 holds"),
        ("", r"c\.tsv: empty file"),
    ],
)
def test_bad_confounds_files(tmp_path, text, match):
    path = tmp_path / "c.tsv"
    path.write_text(text)
    with pytest.raises(InputDataError, match=match):
        motion_metrics(path)


def _record(mean_fd=0.1, fd=None, dvars=None, status="included"):
    return {"status": status, "mean_fd": mean_fd, "fd": fd, "mean_std_dvars": dvars}


def test_mean_fd_threshold_excludes_above_and_keeps_equal(caplog):
    records = {"sub-a": _record(0.71), "sub-b": _record(0.55), "sub-c": _record(None, dvars=9.0),
               "sub-d": _record(0.9, status="excluded")}
    with caplog.at_level(logging.WARNING, logger="brainage"):
        table = motion_exclusions(records, QC)
    assert table.to_dict("records") == [
        {"participant_id": "sub-a", "stage": "qc", "reason": "mean FD 0.710 mm > qc.max_mean_fd 0.55 mm"}]
    assert "excluding sub-a (qc): mean FD 0.710 mm" in caplog.text and "sub-b" not in caplog.text


def test_high_motion_fraction_and_std_dvars():
    # 3 of the 4 frames with a value are above 0.2 mm (the n/a frame does not count; 0.2 itself
    # is not above): 0.75 > 0.5.
    fd = [None, 0.3, 0.25, 0.2, 0.4]
    params = dict(OFF, max_high_motion_fraction=0.5, max_mean_std_dvars=1.2)
    table = motion_exclusions({"sub-e": _record(0.3, fd=fd, dvars=1.3)}, params)
    assert table.reason.tolist() == [
        "high-motion fraction 0.750 (3 of 4 frames with FD > qc.high_motion_fd 0.2 mm) > "
        "qc.max_high_motion_fraction 0.5; mean std DVARS 1.300 > qc.max_mean_std_dvars 1.2"]
    # Exactly at each threshold: kept.
    at = dict(params, max_high_motion_fraction=0.75, max_mean_std_dvars=1.3)
    assert motion_exclusions({"sub-e": _record(0.3, fd=fd, dvars=1.3)}, at).empty
    # high_motion_fd moves which frames count: above 0.3 mm only the 0.4 frame (1 of 4).
    assert motion_exclusions({"sub-e": _record(0.3, fd=fd)}, dict(params, high_motion_fd=0.3)).empty
    # All three checks fail: the reasons are joined in config order.
    both = motion_exclusions({"sub-f": _record(0.6, fd=fd, dvars=2.0)}, dict(params, max_mean_fd=0.55))
    assert both.reason.iloc[0].count("; ") == 2 and both.reason.iloc[0].startswith("mean FD 0.600 mm")


def test_disabled_thresholds_and_records_without_metrics_exclude_nobody():
    table = motion_exclusions({"sub-a": _record(5.0, fd=[None, 1.0, 2.0], dvars=9.0)}, OFF)
    assert table.empty and list(table.columns) == ["participant_id", "stage", "reason"]
    on = {"max_mean_fd": 0.1, "high_motion_fd": 0.1, "max_high_motion_fraction": 0.0, "max_mean_std_dvars": 0.1}
    # An already-denoised input (ABIDE PCP) has no motion metrics at all: not checked.
    assert motion_exclusions({"sub-pcp": _record(None, fd=None, dvars=None)}, on).empty
    assert len(motion_exclusions({"sub-a": _record(5.0, fd=[None, 1.0], dvars=9.0)}, on)) == 1


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"max_mean_fd": 0.5}, r"qc params: expected keys .*missing \['high_motion_fd', 'max_high_motion_fraction', "
                               r"'max_mean_std_dvars'\], unknown \[\]"),
        (dict(QC, max_fd=1.0), r"unknown \['max_fd'\]"),
        (dict(QC, high_motion_fd=None), r"qc\.high_motion_fd: expected a number, found None"),
        (dict(QC, max_mean_fd="0.5"), r"qc\.max_mean_fd: expected a number or null, found '0\.5'"),
        (dict(QC, max_mean_std_dvars=True), r"qc\.max_mean_std_dvars: expected a number or null, found True"),
    ],
)
def test_bad_params(params, match):
    with pytest.raises(ConfigError, match=match):
        motion_exclusions({"sub-a": _record(0.1)}, params)
