"""Tests for brainage.extract.confounds: censoring arithmetic, missing columns."""

import numpy as np
import pytest
from extract_fixtures import PLANT_FREQ_HZ, custom_params, extract_params, make_subject, outputs

from brainage.errors import InputDataError
from brainage.extract.confounds import frames_kept, select_confounds
from brainage import storage
from brainage.extract.subject import extract_subject
from brainage.extract.params import ExtractParams


def _select(subject, strategy=None, **overrides):
    """Select with the config's preset, or with ``denoise: custom`` and ``strategy`` ("scrub" = censoring)."""
    if strategy is None:
        params = extract_params(**overrides)
    else:
        params = custom_params([s for s in strategy if s != "scrub"], scrub="scrub" in strategy, **overrides)
    params = ExtractParams.from_dict(params)
    return select_confounds(subject.bold, subject.confounds, params), params


@pytest.mark.parametrize(
    ("min_segment", "removed"),
    [
        # nilearn's scrub (Power et al. 2014): flag FD > 0.5 mm (frames 2, 50, 53) and std DVARS
        # > 3 (frame 80); then drop a leading segment shorter than min_segment (frames 0-1
        # before the outlier at 2), a trailing one (none: 19 frames after 80) and any run of
        # fewer than min_segment frames between two outliers (51-52 between 50 and 53; the
        # 26 frames 54-79 stay).
        (5, [0, 1, 2, 50, 51, 52, 53, 80]),
        # min_segment 0 disables the segment rule: only the outliers go.
        (0, [2, 50, 53, 80]),
    ],
)
def test_censoring_arithmetic(tmp_path, min_segment, removed):
    subject = make_subject(tmp_path, fd_spikes={2: 0.9, 50: 0.6, 53: 1.5}, dvars_spikes={80: 5.0})
    (confounds, sample_mask), params = _select(subject, scrub_min_segment=min_segment)
    kept = frames_kept(100, sample_mask, params, subject.confounds, 2.0)
    np.testing.assert_array_equal(kept, np.setdiff1d(np.arange(100), removed))
    assert confounds.shape[0] == 100
    assert "trans_x_derivative1_power2" in confounds.columns  # motion "full" = 24 columns
    assert not confounds.isna().any().any()  # nilearn fills the first-row n/a


def test_no_scrub_keeps_all_but_non_steady_state(tmp_path):
    subject = make_subject(tmp_path, fd_spikes={50: 3.0}, non_steady=(0, 1))
    (_, sample_mask), params = _select(subject, strategy=["motion", "wm_csf", "high_pass"])
    np.testing.assert_array_equal(frames_kept(100, sample_mask, params, subject.confounds, 2.0), np.arange(2, 100))
    (_, sample_mask), params = _select(subject, strategy=["motion"])
    assert frames_kept(100, sample_mask, params, subject.confounds, 2.0).size == 98


def test_too_few_frames_left(tmp_path):
    subject = make_subject(tmp_path, fd_spikes={k: 1.0 for k in range(1, 100, 3)})
    (_, sample_mask), params = _select(subject)
    with pytest.raises(InputDataError, match=r"confounds_timeseries.tsv: 0 of 100 frames left after "
                       r"censoring \(FD > 0.5 mm, std DVARS > 3, .*need 40 frames \(extract.min_frames\)"):
        frames_kept(100, sample_mask, params, subject.confounds, 2.0)


def test_too_few_frames_without_scrub_names_the_rule(tmp_path):
    params = ExtractParams.from_dict(custom_params(["motion"], scrub=False, min_frames=50))
    with pytest.raises(InputDataError, match=r"30 of 30 frames left .*non-steady-state volumes\) = 60 s of clean data at TR 2 s; need 50 frames"):
        frames_kept(30, None, params, tmp_path / "c.tsv", 2.0)


@pytest.mark.parametrize(
    ("strategy", "dropped", "match"),
    [
        (["motion", "wm_csf"], ["white_matter"], r"confounds_timeseries.tsv: cannot select the confounds of extract.denoise 'custom'.*white_matter"),
        (["motion", "wm_csf"], ["csf", "white_matter"], r"confounds_timeseries.tsv: .*missing.*wm_csf"),
        (["motion"], ["rot_z_power2"], r"confounds_timeseries.tsv: .*rot_z_power2"),
        (["motion", "scrub"], ["std_dvars"], r"confounds_timeseries.tsv: missing columns \['std_dvars'\] "
                                             r"needed by extract.scrub \(censoring\)"),
    ],
)
def test_missing_columns(tmp_path, strategy, dropped, match):
    subject = make_subject(tmp_path, edit_confounds=lambda c: c.drop(columns=dropped))
    with pytest.raises(InputDataError, match=match):
        _select(subject, strategy=strategy)


def test_too_little_clean_time_left(tmp_path):
    # 60 frames kept of 100 at TR 2 s = 120 s: enough frames (40) but under min_seconds 150.
    # 20 frames with FD 1 mm are censored: 80 kept = 160 s at TR 2 s.
    subject = make_subject(tmp_path, fd_spikes={k: 1.0 for k in range(60, 100, 2)})
    (_, sample_mask), params = _select(subject, scrub_min_segment=0, min_seconds=150)
    kept = 100 - 20
    with pytest.raises(InputDataError, match=rf"confounds_timeseries.tsv: {kept} of 100 frames left after censoring "
                       rf"\(.*\) = {2 * kept} s of clean data at TR 2 s; need 40 frames \(extract.min_frames\) "
                       r"and 161 s \(extract.min_seconds\)"):
        frames_kept(100, sample_mask, ExtractParams.from_dict({**params.to_dict(), "min_seconds": 161}),
                    subject.confounds, 2.0)
    assert frames_kept(100, sample_mask, params, subject.confounds, 2.0).size == kept  # 160 s >= 150 s


def test_null_thresholds_censor_nothing_on_that_measure(tmp_path):
    subject = make_subject(tmp_path, fd_spikes={30: 2.0}, dvars_spikes={70: 9.0})
    for fd, dvars, removed in [(None, 3.0, [70]), (0.5, None, [30]), (None, None, [])]:
        (_, sample_mask), params = _select(subject, scrub_min_segment=0, fd_threshold=fd, std_dvars_threshold=dvars)
        kept = frames_kept(100, sample_mask, params, subject.confounds, 2.0)
        np.testing.assert_array_equal(kept, np.setdiff1d(np.arange(100), removed))


#: Each preset's regressors as nilearn names them (the fixture's confounds: fMRIPrep >= 21 columns).
_MOTION = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]
_FULL = ["", "_derivative1", "_power2", "_derivative1_power2"]
PRESET_COLUMNS = {
    "simple": {m + e for m in _MOTION for e in _FULL} | {"white_matter", "csf"} | {f"cosine{k:02d}" for k in range(3)},
    "24P": {m + e for m in _MOTION for e in _FULL},
    "27P": {m + e for m in _MOTION for e in _FULL} | {"white_matter", "csf", "global_signal"},
    "36P": {m + e for m in _MOTION + ["white_matter", "csf", "global_signal"] for e in _FULL},
    # The fixture has 3 CSF and 4 WM aCompCor components: nilearn takes up to 5 of each.
    "acompcor": ({m + e for m in _MOTION for e in ["", "_derivative1"]} | {f"c_comp_cor_{k:02d}" for k in range(3)}
                 | {f"w_comp_cor_{k:02d}" for k in range(4)} | {f"cosine{k:02d}" for k in range(3)}),
}
PRESET_COLUMNS["acompcor_gsr"] = PRESET_COLUMNS["acompcor"] | {"global_signal", "global_signal_derivative1"}


@pytest.mark.parametrize("preset", list(PRESET_COLUMNS))
def test_preset_selects_its_regressors(tmp_path, preset):
    subject = make_subject(tmp_path)
    (confounds, _), _ = _select(subject, denoise=preset, scrub=False)
    assert set(confounds.columns) == PRESET_COLUMNS[preset]


@pytest.mark.parametrize("preset", [*PRESET_COLUMNS, "custom"])
def test_preset_keeps_a_planted_sinusoid_and_removes_motion(tmp_path, preset):
    # The fixture adds 4 SD of trans_x to every voxel (motion only) and a 0.05 Hz sinusoid to
    # region roi_001 only: every preset regresses trans_x, none may touch the sinusoid. 300
    # frames: with up to 36 regressors, 100 frames would leave the fit too few degrees of freedom.
    subject = make_subject(tmp_path, n=300)
    out = outputs(tmp_path)
    params = (custom_params(["motion", "high_pass"], motion="basic") if preset == "custom"
              else extract_params(denoise=preset))
    qc = extract_subject("sub-01", subject.bold, subject.mask, [subject.atlas_dir], params, **out)
    assert qc["status"] == "included" and qc["denoise"] == preset
    series = storage.read_timeseries(out["series_out"][0])
    kept = np.asarray(series.metadata["frames"])
    planted, trans_x = subject.truth["planted"][kept], subject.truth["trans_x"][kept]
    raw = subject.truth["data"][(subject.truth["atlas"] == 2) & subject.truth["brain"]].mean(axis=0)
    assert abs(np.corrcoef(raw[kept], trans_x)[0, 1]) > 0.9  # motion dominates before
    assert np.corrcoef(series.data[:, 0], planted)[0, 1] > 0.9
    assert abs(np.corrcoef(series.data[:, 1], trans_x)[0, 1]) < 0.1
    assert np.corrcoef(series.data[:, 1], planted)[0, 1] < 0.3  # no sinusoid where none was planted
    assert PLANT_FREQ_HZ == 0.05


def _rewrite(subject, edit):
    edit(storage.read_tsv(subject.confounds)).to_csv(subject.confounds, sep="\t", index=False, na_rep="n/a")


def test_first_row_n_a_is_filled_but_later_n_a_in_a_regressor_is_an_error(tmp_path):
    subject = make_subject(tmp_path)
    # fMRIPrep's own n/a (first row of derivatives, FD, DVARS) is fine.
    (confounds, _), _ = _select(subject)
    assert np.isfinite(confounds.to_numpy()).all()

    def nan_rows(conf):
        conf.loc[40:44, "trans_y_derivative1"] = np.nan
        conf.loc[[7, 9], "trans_y_derivative1"] = np.nan
        return conf

    _rewrite(subject, nan_rows)
    with pytest.raises(InputDataError, match=r"confounds_timeseries.tsv: n/a or non-finite values \(NaN, inf\) in "
                                             r"regressors of extract.denoise 'simple': trans_y_derivative1 at frames "
                                             r"7, 9, 40-44 \(frames count from 0"):
        _select(subject)
    # A column the strategy does not select may hold n/a.
    (confounds, _), _ = _select(subject, ["wm_csf"], wm_csf="basic")
    assert list(confounds.columns) == ["csf", "white_matter"]


def test_confounds_rows_must_match_the_bold(tmp_path):
    subject = make_subject(tmp_path)
    params = ExtractParams.from_dict(extract_params())
    assert len(select_confounds(subject.bold, subject.confounds, params, 100)[0]) == 100
    with pytest.raises(InputDataError, match=r"confounds_timeseries.tsv: expected one row per BOLD frame "
                                             r"\(120 rows\), found 100"):
        select_confounds(subject.bold, subject.confounds, params, 120)


def test_text_cells_and_a_bad_sidecar_are_named(tmp_path):
    subject = make_subject(tmp_path)

    def text(conf):
        conf["rot_z"] = conf["rot_z"].astype(object)
        conf.loc[[3, 4], "rot_z"] = "n.a."
        return conf

    _rewrite(subject, text)
    with pytest.raises(InputDataError, match=r"confounds_timeseries.tsv: expected numbers or n/a, found text: "
                                             r"rot_z at frames 3-4 \('n.a.'\)"):
        _select(subject)
    subject = make_subject(tmp_path / "b")
    subject.confounds.with_suffix(".json").write_text("{")
    with pytest.raises(InputDataError, match=r"confounds_timeseries.json: confounds sidecar is not valid JSON"):
        _select(subject)
