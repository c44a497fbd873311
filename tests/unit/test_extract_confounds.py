"""Tests for brainage.extract.confounds: censoring arithmetic, missing columns."""

import numpy as np
import pytest
from extract_fixtures import extract_params, make_subject

from brainage.errors import InputDataError
from brainage.extract.confounds import frames_kept, select_confounds
from brainage.extract.params import ExtractParams


def _select(subject, **overrides):
    params = ExtractParams.from_dict(extract_params(**overrides))
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
    kept = frames_kept(100, sample_mask, params, subject.confounds)
    np.testing.assert_array_equal(kept, np.setdiff1d(np.arange(100), removed))
    assert confounds.shape[0] == 100
    assert "trans_x_derivative1_power2" in confounds.columns  # motion "full" = 24 columns
    assert not confounds.isna().any().any()  # nilearn fills the first-row n/a


def test_no_scrub_keeps_all_but_non_steady_state(tmp_path):
    subject = make_subject(tmp_path, fd_spikes={50: 3.0}, non_steady=(0, 1))
    (_, sample_mask), params = _select(subject, strategy=["motion", "wm_csf", "high_pass"])
    np.testing.assert_array_equal(frames_kept(100, sample_mask, params, subject.confounds), np.arange(2, 100))
    (_, sample_mask), params = _select(subject, strategy=["motion"])
    assert frames_kept(100, sample_mask, params, subject.confounds).size == 98


def test_too_few_frames_left(tmp_path):
    subject = make_subject(tmp_path, fd_spikes={k: 1.0 for k in range(1, 100, 3)})
    (_, sample_mask), params = _select(subject)
    with pytest.raises(InputDataError, match=r"confounds_timeseries.tsv: 0 of 100 frames left after "
                       r"censoring \(FD > 0.5 mm, std DVARS > 3.0.*need 40 \(extract.min_frames\)"):
        frames_kept(100, sample_mask, params, subject.confounds)


def test_too_few_frames_without_scrub_names_the_rule(tmp_path):
    params = ExtractParams.from_dict(extract_params(strategy=["motion"], min_frames=50))
    with pytest.raises(InputDataError, match=r"30 of 30 frames left .*non-steady-state volumes\), need 50"):
        frames_kept(30, None, params, tmp_path / "c.tsv")


@pytest.mark.parametrize(
    ("strategy", "dropped", "match"),
    [
        (["motion", "wm_csf"], ["white_matter"], r"confounds_timeseries.tsv: cannot select confounds.*white_matter"),
        (["motion", "wm_csf"], ["csf", "white_matter"], r"confounds_timeseries.tsv: .*missing.*wm_csf"),
        (["motion"], ["rot_z_power2"], r"confounds_timeseries.tsv: .*rot_z_power2"),
        (["motion", "scrub"], ["std_dvars"], r"confounds_timeseries.tsv: missing columns \['std_dvars'\] "
                                             r"needed by extract.strategy 'scrub'"),
    ],
)
def test_missing_columns(tmp_path, strategy, dropped, match):
    subject = make_subject(tmp_path, edit_confounds=lambda c: c.drop(columns=dropped))
    with pytest.raises(InputDataError, match=match):
        _select(subject, strategy=strategy)
