"""Tests for brainage.extract.clean: the cleaning operator, standardisation, and the ROI series
against nilearn's NiftiLabelsMasker."""

import numpy as np
import pandas as pd
import pytest
from extract_fixtures import custom_params, extract_params, make_subject, outputs
from nilearn.image import index_img
from nilearn.interfaces.fmriprep import load_confounds
from nilearn.maskers import NiftiLabelsMasker
from nilearn.signal import clean

from brainage import storage
from brainage.extract.subject import extract_subject
from brainage.extract.clean import clean_signals, standardize_series
from brainage.extract.params import ExtractParams

TR = 2.0


def _params(**overrides) -> ExtractParams:
    return ExtractParams.from_dict(extract_params(**overrides))


def _random_problem(n=100, n_voxels=20, seed=0):
    rng = np.random.default_rng(seed)
    voxels = 50 + rng.normal(size=(n, n_voxels)).cumsum(axis=0)
    confounds = pd.DataFrame(rng.normal(size=(n, 4)), columns=["a", "b", "c", "d"])
    return voxels, confounds


@pytest.mark.parametrize(
    ("high_pass", "low_pass", "sample_mask"),
    [
        (0.01, 0.1, None),
        (0.01, 0.1, np.r_[0:30, 34:100]),  # interior gap; its mirror frames are kept
        (None, None, np.r_[2:50, 55:100]),  # no filter: plain censoring
        (None, 0.1, None),
    ],
)
def test_clean_signals_equals_nilearn_clean(high_pass, low_pass, sample_mask):
    voxels, confounds = _random_problem()
    params = _params(high_pass=high_pass, low_pass=low_pass)
    filtering = high_pass is not None or low_pass is not None
    expected = clean(
        voxels, detrend=True, standardize=None, sample_mask=sample_mask, confounds=confounds.to_numpy(),
        standardize_confounds=True, filter="butterworth" if filtering else False,
        low_pass=low_pass, high_pass=high_pass, t_r=TR, extrapolate=False,
    )
    got = clean_signals(voxels, confounds, sample_mask, TR, params)
    n_kept = 100 if sample_mask is None else sample_mask.size
    assert got.shape == (n_kept, 20)
    np.testing.assert_allclose(got, expected, rtol=1e-8, atol=1e-8 * np.abs(expected).max())


def test_censoring_at_both_ends_keeps_the_right_frames():
    # nilearn 0.13.1 clean (Butterworth + index sample_mask) writes interpolated frames at
    # ~sample_mask (mirrored indices): with frames censored at both ends it returns frames
    # shifted towards the start. Ours must equal cleaning the kept span alone.
    voxels, confounds = _random_problem()
    voxels[:3] += 1e4
    voxels[97:] -= 1e4
    kept = np.arange(3, 97)
    got = clean_signals(voxels, confounds, kept, TR, _params())
    expected = clean(
        voxels[3:97], detrend=True, standardize=None, confounds=confounds.to_numpy()[3:97],
        standardize_confounds=True, low_pass=0.1, high_pass=0.01, t_r=TR,
    )
    np.testing.assert_allclose(got, expected, rtol=1e-7, atol=1e-7 * np.abs(expected).max())


def test_censored_spikes_do_not_leak_through_the_filter():
    # Frames 10 and 89 are mirrors (99 - 10 = 89), the case nilearn 0.13.1 leaves raw.
    t = np.arange(100) * TR
    smooth = np.sin(2 * np.pi * 0.04 * t)[:, None] * np.ones((1, 3))
    spiky = smooth.copy()
    spiky[[10, 89]] = 1000.0
    kept = np.setdiff1d(np.arange(100), [10, 89])
    params = _params()
    got = clean_signals(spiky, None, kept, TR, params)
    reference = clean_signals(smooth, None, kept, TR, params)
    assert np.abs(got).max() < 2
    np.testing.assert_allclose(got, reference, atol=0.02)


def test_standardize_series_zscore_psc_none():
    series = np.array([[1.0, 5.0, -1.0], [3.0, 5.0, 1.0], [5.0, 5.0, 0.0]])
    z = standardize_series(series, "zscore_sample", TR)
    np.testing.assert_allclose(z[:, 0], [-1.0, 0.0, 1.0])  # mean 3, sample SD 2
    np.testing.assert_allclose(z[:, 1], 0.0)  # constant column -> 0
    np.testing.assert_array_equal(standardize_series(series, None, TR), series)
    psc = standardize_series(series[:, 2:], "psc", TR, raw_means=np.array([200.0]))
    np.testing.assert_allclose(psc[:, 0], [-0.5, 0.5, 0.0])  # +-1 around 200 = +-0.5 %


def _masker_reference(subject, params, img=None, confounds=None, sample_mask=None):
    masker = NiftiLabelsMasker(
        labels_img=str(subject.atlas), mask_img=str(subject.mask), standardize=params["standardize"] or None,
        standardize_confounds=True, detrend=params["detrend"], high_pass=params["high_pass"],
        low_pass=params["low_pass"], t_r=TR, dtype="float64", reports=False,
    )
    return masker.fit_transform(img or str(subject.bold), confounds=confounds, sample_mask=sample_mask)


def _load_confounds(subject, params):
    return load_confounds(str(subject.bold), demean=True, **ExtractParams.from_dict(params).confounds)


@pytest.mark.parametrize("scrub", [True, False])
def test_series_equal_nilearn_labels_masker(tmp_path, scrub):
    subject = make_subject(tmp_path, fd_spikes={30: 0.9, 33: 0.8}, non_steady=(0,))
    params = custom_params(["motion", "wm_csf", "high_pass"], scrub=scrub)
    out = outputs(tmp_path)
    qc = extract_subject("sub-01", subject.bold, subject.mask, [subject.atlas_dir], params, **out)
    confounds, sample_mask = _load_confounds(subject, params)
    expected = _masker_reference(subject, params, confounds=confounds, sample_mask=sample_mask)
    got = storage.read_timeseries(out["series_out"][0]).data
    assert qc["n_frames_kept"] == (95 if scrub else 99)
    assert expected.shape == (qc["n_frames_kept"], 8)  # the masker drops the empty roi_009
    np.testing.assert_allclose(got[:, :8], expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    np.testing.assert_array_equal(got[:, 8], 0.0)


def test_series_with_both_ends_censored_equal_masker_on_kept_span(tmp_path):
    # Frames 0-1 non-steady-state; an FD spike at 97 drops 97-99 (end segment < 5 frames).
    subject = make_subject(tmp_path, non_steady=(0, 1), fd_spikes={97: 2.0})
    params = extract_params()
    out = outputs(tmp_path)
    qc = extract_subject("sub-01", subject.bold, subject.mask, [subject.atlas_dir], params, **out)
    confounds, sample_mask = _load_confounds(subject, params)
    np.testing.assert_array_equal(sample_mask, np.arange(2, 97))
    expected = _masker_reference(subject, params, img=index_img(str(subject.bold), slice(2, 97)),
                                 confounds=confounds.iloc[2:97])
    got = storage.read_timeseries(out["series_out"][0]).data
    assert qc["n_frames_kept"] == 95
    np.testing.assert_allclose(got[:, :8], expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


@pytest.mark.parametrize("standardize", [False, "psc"])
def test_series_standardize_option_matches_masker(tmp_path, standardize):
    subject = make_subject(tmp_path, n=60)
    params = custom_params(["motion", "wm_csf"], scrub=False, standardize=standardize, min_frames=20)
    out = outputs(tmp_path)
    extract_subject("sub-01", subject.bold, subject.mask, [subject.atlas_dir], params, **out)
    confounds, _ = _load_confounds(subject, params)
    expected = _masker_reference(subject, params, confounds=confounds)
    got = storage.read_timeseries(out["series_out"][0]).data[:, :8]
    assert not np.allclose(got.std(axis=0, ddof=1), 1.0, rtol=0.05)  # not z-scored
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
