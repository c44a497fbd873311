"""Tests for extraction of already denoised ABIDE PCP ``func_preproc`` volumes (no confounds, TR from the header)."""

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from extract_fixtures import extract_params, make_subject, outputs, write_atlas_dir
from nilearn.signal import clean
from pcp_volumes import (
    CROP_SHAPE,
    TR,
    anterior_gain,
    brain_mask,
    crop_affine,
    interhemispheric_coupling,
    pcp_paths,
    voxel_coords,
    write_pcp_func,
)

from brainage import storage
from brainage.errors import InputDataError
from brainage.extract.subject import extract_subject
from brainage.extract.__main__ import main
from brainage.extract.inputs import atlas_on_grid, header_repetition_time, load_atlas, repetition_time

FILE_ID = "Pitt_0050003"
# PCP 3 mm BOLD: volumes at 6 mm (a whole multiple); the config default 8 mm is not.
PCP_PARAMS = {"volume_voxel_size": 6}


def _nifti(path, zooms, unit, shape=(2, 2, 2, 5)):
    img = nib.Nifti1Image(np.ones(shape, np.float32), np.eye(4))
    img.header.set_zooms(zooms)
    img.header.set_xyzt_units("mm", unit)
    nib.save(img, path)
    return path


@pytest.mark.parametrize(
    ("pixdim4", "unit", "expected"),
    [(2.5, "sec", 2.5), (2500.0, "msec", 2.5), (2_500_000.0, "usec", 2.5), (1.5, "unknown", 1.5)],
)
def test_tr_from_header(tmp_path, caplog, pixdim4, unit, expected):
    bold = _nifti(tmp_path / "x_func_preproc.nii.gz", (3, 3, 3, pixdim4), unit)
    with caplog.at_level(logging.WARNING):
        assert repetition_time(bold) == (pytest.approx(expected), "header")
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    if unit == "unknown":
        assert warned == [f"{bold}: NIfTI time unit unknown; taking pixdim[4] = 1.5 as seconds"]
    else:
        assert warned == []


@pytest.mark.parametrize(
    ("zooms", "unit", "shape", "match"),
    [
        ((3, 3, 3, 0), "sec", (2, 2, 2, 5),
         r"x_func_preproc.nii.gz: no JSON sidecar and expected a positive repetition time in the NIfTI "
         r"header \(pixdim\[4\]\), found 0 sec"),
        ((3, 3, 3, 2), "hz", (2, 2, 2, 5),
         r"x_func_preproc.nii.gz: expected a time unit \(sec, msec, usec\) .* found 'hz'"),
        ((3, 3, 3), "sec", (2, 2, 2),
         r"x_func_preproc.nii.gz: no JSON sidecar and no time axis in the NIfTI header \(shape \(2, 2, 2\)\)"),
    ],
)
def test_tr_header_errors(tmp_path, zooms, unit, shape, match):
    bold = _nifti(tmp_path / "x_func_preproc.nii.gz", zooms, unit, shape)
    with pytest.raises(InputDataError, match=match):
        header_repetition_time(bold)


def test_sidecar_wins_over_header(tmp_path):
    subject = make_subject(tmp_path, n=40, tr=2.0)  # header pixdim[4] stays nibabel's 1.0
    assert nib.load(subject.bold).header.get_zooms()[3] == 1.0
    assert repetition_time(subject.bold) == (2.0, "sidecar")


@pytest.fixture
def pcp(tmp_path):
    """One PCP subject and a left / right hemisphere atlas on its grid."""
    write_pcp_func(tmp_path, pd.DataFrame({"file_id": [FILE_ID], "age": [20.0], "site": ["PITT"]}), seed=3)
    bold, mask = pcp_paths(tmp_path, FILE_ID)
    x = voxel_coords()[..., 0]
    atlas = tmp_path / "hemispheres.nii.gz"
    nib.save(nib.Nifti1Image(np.where(x < 0, 1, np.where(x > 0, 2, 0)).astype(np.int16), crop_affine()), atlas)
    folder = write_atlas_dir(tmp_path / "hemispheres", atlas,
                             pd.DataFrame({"index": [1, 2], "name": ["left", "right"]}))
    return bold, mask, [folder]


def _cli(bold, mask, atlases, out, params, confounds=None):
    args = ["subject", "--participant-id", "sub-01", "--bold", str(bold), "--mask", str(mask),
            "--atlas", *map(str, atlases), "--params", json.dumps(params),
            "--series-out", *map(str, out["series_out"]), "--volumes-out", str(out["volumes_out"]),
            "--qc-out", str(out["qc_out"])]
    return args + (["--confounds", str(confounds)] if confounds else [])


def test_pcp_subject_without_confounds_keeps_in_band_sinusoid(pcp, tmp_path, capsys):
    bold, mask, atlases = pcp
    img = nib.load(bold)
    data = img.get_fdata(dtype=np.float32)
    brain, x = brain_mask(), voxel_coords()[..., 0]
    t = np.arange(data.shape[3]) * TR
    in_band, out_band = np.sin(2 * np.pi * 0.05 * t), np.sin(2 * np.pi * 0.2 * t)
    data[brain & (x < 0)] += 200 * in_band  # 20 % of the baseline: dominates the planted signals
    data[brain & (x > 0)] += 200 * out_band  # above low_pass = 0.1 Hz: must be filtered out
    nib.save(nib.Nifti1Image(data, img.affine, img.header), bold)
    out = outputs(tmp_path)
    params = extract_params(**PCP_PARAMS)
    assert main(_cli(bold, mask, atlases, out, params)) == 0

    qc = storage.read_json(out["qc_out"])
    assert qc["status"] == "included" and qc["confounds"] == "none" and qc["strategy"] == []
    assert qc["mean_fd"] is None and qc["max_fd"] is None and qc["fd"] is None
    assert qc["mean_std_dvars"] is None and qc["mean_dvars"] is None
    assert qc["tr"] == TR and qc["tr_source"] == "header"
    assert qc["n_timepoints"] == qc["n_frames_kept"] == 60 and qc["missing_regions"] == []
    assert qc["volume_shape"] == [8, 7, 6]
    series = storage.read_timeseries(out["series_out"][0])
    assert series.data.shape == (60, 2) and series.labels == ["left", "right"]
    assert np.corrcoef(series.data[:, 0], in_band)[0, 1] > 0.95  # the planted ~1.5 % signal stays too
    assert abs(np.corrcoef(series.data[:, 1], out_band)[0, 1]) < 0.05
    # Known answer: nilearn's clean of each region's raw mean (what NiftiLabelsMasker does).
    for column, side in enumerate([x < 0, x > 0]):
        expected = clean(data[brain & side].mean(axis=0)[:, None], detrend=True, standardize="zscore_sample",
                         filter="butterworth", high_pass=0.01, low_pass=0.1, t_r=TR)[:, 0]
        np.testing.assert_allclose(series.data[:, column], expected, atol=2e-4)
    meta = series.metadata
    assert meta["confounds"] == "none" and meta["tr_source"] == "header" and meta["frames"] == list(range(60))
    assert meta["sources"] == {"bold": bold.name, "mask": mask.name} and meta["atlas"] == "hemispheres"
    vols = storage.read_volumes(out["volumes_out"])
    assert vols.data.shape == (60, qc["n_volume_voxels"]) and vols.mask.shape == (8, 7, 6)
    err = capsys.readouterr().err.splitlines()
    skipped = [line for line in err if "confound regression and scrubbing skipped" in line]
    assert len(skipped) == 1 and " INFO " in skipped[0]


def test_pcp_too_few_frames_is_excluded(pcp, tmp_path):
    out = outputs(tmp_path)
    qc = extract_subject("sub-01", *pcp, extract_params(**PCP_PARAMS, min_frames=61), **out, denoised=True)
    assert qc["status"] == "excluded" and qc["confounds"] == "none"
    assert qc["reason"].endswith(
        f"{FILE_ID}_func_preproc.nii.gz: 60 frames = 120 s at TR 2 s (no censoring: already denoised); need 61 "
        "frames (extract.min_frames) and 100 s (extract.min_seconds)")
    assert storage.read_timeseries(out["series_out"][0]).data.shape == (0, 2)


def test_pcp_without_tr_is_excluded(pcp, tmp_path):
    bold = pcp[0]
    img = nib.load(bold)
    img.header.set_zooms((3.0, 3.0, 3.0, 0.0))
    nib.save(nib.Nifti1Image(img.get_fdata(dtype=np.float32), img.affine, img.header), bold)
    out = outputs(tmp_path)
    assert main(_cli(*pcp, out, extract_params(**PCP_PARAMS))) == 0
    qc = storage.read_json(out["qc_out"])
    assert qc["status"] == "excluded" and qc["tr"] is None and qc["tr_source"] is None
    assert qc["reason"] == (f"{bold}: no JSON sidecar and expected a positive repetition time in the "
                            "NIfTI header (pixdim[4]), found 0 sec")


def test_denoised_wiring_errors(tmp_path, pcp):
    subject = make_subject(tmp_path / "fmriprep", n=40)
    out = outputs(tmp_path)
    args = (subject.bold, subject.mask, [subject.atlas_dir], extract_params(min_frames=10))
    with pytest.raises(ValueError, match=r"confounds .*timeseries.tsv given for an already denoised BOLD"):
        extract_subject("sub-01", *args, **out, confounds=subject.confounds, denoised=True)
    # An fMRIPrep BOLD without --confounds would skip its denoising: the job fails instead.
    with pytest.raises(ValueError, match=r"preproc_bold.nii.gz is treated as already denoised .* the fMRIPrep "
                       r"confounds file sub-01_task-rest_desc-confounds_timeseries.tsv lies beside it"):
        extract_subject("sub-01", *args, **out, denoised=True)
    assert main(_cli(*args[:3], out, args[3])) == 1
    assert not out["qc_out"].exists()


def test_fmriprep_qc_names_confounds_and_tr_source(tmp_path):
    subject = make_subject(tmp_path, n=40)
    out = outputs(tmp_path)
    qc = extract_subject("sub-01", subject.bold, subject.mask, [subject.atlas_dir],
                         extract_params(min_frames=10, min_seconds=60), **out, confounds=subject.confounds)
    assert qc["confounds"] == subject.confounds.name and qc["tr_source"] == "sidecar"
    assert qc["strategy"] == ["motion", "wm_csf", "high_pass", "scrub"] and qc["mean_fd"] > 0
    assert storage.read_timeseries(out["series_out"][0]).metadata["confounds"] == subject.confounds.name


def test_crop_lies_on_the_pcp_atlas_lattice(tmp_path, shared_data):
    # CC200 is on the padded PCP grid (63 x 75 x 61, voxel 0 at (93, -129, -72) mm): our crop
    # starts at its voxel (24, 30, 24), so nearest-neighbour resampling is plain slicing.
    write_pcp_func(tmp_path, pd.DataFrame({"file_id": [FILE_ID], "age": [20.0], "site": ["PITT"]}), seed=0)
    cc200 = load_atlas(shared_data / "abide_pcp_atlases" / "CC200.nii.gz")
    on_grid = atlas_on_grid(cc200, nib.load(pcp_paths(tmp_path, FILE_ID)[1]))
    expected = np.asarray(cc200.dataobj)[24:24 + CROP_SHAPE[0], 30:30 + CROP_SHAPE[1], 24:24 + CROP_SHAPE[2]]
    np.testing.assert_array_equal(on_grid, expected)
    assert len(np.unique(on_grid[brain_mask()])) > 10


def test_planted_age_effect_survives_extraction(tmp_path, pcp):
    ages = np.linspace(7.0, 60.0, 12)
    cohort = pd.DataFrame({"file_id": [f"SITE{k % 3}_{k:07d}" for k in range(12)], "age": ages,
                           "site": [f"SITE{k % 3}" for k in range(12)]})
    write_pcp_func(tmp_path / "bucket", cohort, seed=7)
    coupling, amplitude = [], []
    for file_id in cohort["file_id"]:
        out = {k: tmp_path / file_id / Path(p[0] if isinstance(p, list) else p).name
               for k, p in outputs(tmp_path).items()}
        out["series_out"] = [out["series_out"]]
        extract_subject(file_id, *pcp_paths(tmp_path / "bucket", file_id), *pcp[2:],
                        extract_params(**PCP_PARAMS), **out, denoised=True)
        series = storage.read_timeseries(out["series_out"][0]).data
        coupling.append(np.corrcoef(series[:, 0], series[:, 1])[0, 1])
        vols = storage.read_volumes(out["volumes_out"])
        y = nib.affines.apply_affine(vols.affine, np.argwhere(vols.mask))[:, 1]
        sd = vols.data.astype(np.float64).std(axis=0)
        amplitude.append(np.log(sd[y > -16.5].mean() / sd[y < -16.5].mean()))
    # ROI series keep the interhemispheric coupling, volumes the anterior amplitude.
    assert np.corrcoef(coupling, ages)[0, 1] > 0.8
    assert np.corrcoef(amplitude, ages)[0, 1] < -0.8
    planted = [interhemispheric_coupling(a) for a in ages]
    np.testing.assert_allclose(coupling, planted, atol=0.15)
    np.testing.assert_allclose(np.exp(amplitude), [anterior_gain(a) for a in ages], rtol=0.15)
