"""Tests for brainage.extract.subject and the CLI: outputs, QC, provenance, exclusions."""

import json
import logging
import re

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from extract_fixtures import extract_params, make_subject, outputs, rewrite_bold, write_atlas_dir

from brainage import storage
from brainage._version import source_version
from brainage.errors import ConfigError, InputDataError
from brainage.extract.subject import extract_subject
from brainage.extract.__main__ import main
from brainage.extract.params import ExtractParams


def _cli_args(subject, out, params, confounds=None):
    return [
        "subject", "--participant-id", "sub-01", "--bold", str(subject.bold), "--mask", str(subject.mask),
        "--confounds", str(confounds or subject.confounds), "--atlas", str(subject.atlas_dir),
        "--params", json.dumps(params), "--series-out", *map(str, out["series_out"]),
        "--volumes-out", str(out["volumes_out"]),
        "--qc-out", str(out["qc_out"]),
    ]


def test_cli_end_to_end(tmp_path):
    subject = make_subject(tmp_path, fd_spikes={40: 0.9})
    out = outputs(tmp_path)
    params = extract_params()
    assert main(_cli_args(subject, out, params)) == 0

    qc = storage.read_json(out["qc_out"])
    assert qc["status"] == "included" and qc["reason"] is None and qc["stage"] == "extract"
    assert qc["n_timepoints"] == 100 and qc["n_frames_kept"] == 99 and qc["tr"] == 2.0
    assert qc["max_fd"] == pytest.approx(0.9) and 0 < qc["mean_fd"] < 0.9
    # The motion metrics of brainage.preprocess.qc, from the confounds table the fixture wrote.
    conf = storage.read_tsv(subject.confounds)
    assert len(qc["fd"]) == 100 and qc["fd"][0] is None and qc["fd"][40] == pytest.approx(0.9)
    assert qc["mean_fd"] == pytest.approx(conf["framewise_displacement"].mean())
    assert qc["mean_std_dvars"] == pytest.approx(conf["std_dvars"].mean())
    assert qc["mean_dvars"] == pytest.approx(20 * qc["mean_std_dvars"])  # the fixture's dvars = 20 x std_dvars
    assert qc["n_regions"] == 9 and qc["missing_regions"] == ["roi_009"]
    assert qc["volume_shape"] == [4, 4, 4] and qc["denoise"] == "simple"
    assert qc["strategy"] == ["motion", "wm_csf", "high_pass", "scrub"]
    assert qc["seconds_kept"] == 198.0  # 99 frames x TR 2 s
    assert qc["fd_dvars_r"] == pytest.approx(conf["framewise_displacement"].corr(conf["dvars"]))
    assert -1 <= qc["fd_dvars_r_clean"] <= 1
    assert qc["atlases"] == {"octants": {"kind": "labels", "n_regions": 9, "lost_regions": ["roi_009"],
                                         "lost_coverage": [0.0], "min_coverage": 0.0,
                                         "space": "MNI152NLin2009cAsym"}}
    assert qc["bold"] == subject.bold.name

    series = storage.read_timeseries(out["series_out"][0])
    assert series.participant_id == "sub-01" and series.data.shape == (99, 9)
    assert series.labels == [f"roi_{i:03d}" for i in range(1, 10)]
    np.testing.assert_allclose(series.data[:, :8].std(axis=0, ddof=1), 1.0, rtol=1e-4)
    meta = series.metadata
    assert meta["frames"] == [k for k in range(100) if k != 40]
    assert meta["params"] == params and meta["tr"] == 2.0 and meta["package_version"] == source_version()
    assert meta["sources"] == {
        "bold": subject.bold.name, "mask": subject.mask.name, "confounds": subject.confounds.name,
    }
    assert meta["atlas"] == "octants" and meta["atlas_kind"] == "labels" and meta["lost_regions"] == ["roi_009"]
    # Octants of a 4-voxel-wide grid half inside a mask without its border: 27 of 64 voxels.
    assert meta["region_coverage"] == [round(27 / 64, 4)] * 8 + [0.0]
    vols = storage.read_volumes(out["volumes_out"])
    assert vols.data.shape == (99, qc["n_volume_voxels"])
    assert vols.metadata["frames"] == meta["frames"]


def _no_tr(subject):
    subject.bold.with_name(subject.bold.name.replace(".nii.gz", ".json")).write_text('{"TaskName": "rest"}')


def _three_d(subject):
    rewrite_bold(subject, subject.truth["data"][..., 0])


def _nans(subject):
    data = subject.truth["data"].copy()
    data[3, 3, 3, :4] = np.nan
    rewrite_bold(subject, data)


def _nan_rows(conf):
    # A regressor of the "simple" preset with n/a beyond the first row (fMRIPrep writes n/a only there).
    conf.loc[10:12, "trans_x"] = np.nan
    conf.loc[30, "white_matter"] = np.nan
    return conf


def _inf(conf):
    conf.loc[5, "rot_y"] = np.inf
    return conf


def _text(conf):
    conf["trans_x"] = conf["trans_x"].astype(object)
    conf.loc[5, "trans_x"] = "abc"
    return conf


def _write(attribute, content, suffix=None):
    """Damage: replace one of the subject's files (``suffix``: its sibling with that suffix) with ``content``."""
    def damage(subject):
        path = getattr(subject, attribute)
        if suffix is not None:
            path = path.with_name(path.name.replace(".nii.gz", suffix).replace(".tsv", suffix))
        path.write_bytes(content(path) if callable(content) else content)
    return damage


def _edit(edit):
    """Damage: edit the subject's confounds table after the BOLD was made from it."""
    def damage(subject):
        edit(storage.read_tsv(subject.confounds)).to_csv(subject.confounds, sep="\t", index=False, na_rep="n/a")
    return damage


def _half(path):
    """The first half of a file's bytes: a truncated download or copy."""
    data = path.read_bytes()
    return data[:len(data) // 2]


BAD_INPUTS = {
    "sidecar without RepetitionTime": (
        _no_tr, {}, r"_desc-preproc_bold.json: expected a positive number under 'RepetitionTime'"),
    "3D BOLD": (_three_d, {}, r"_desc-preproc_bold.nii.gz: expected a 4D image, found shape \(8, 8, 8\)"),
    "NaNs in the mask": (_nans, {}, r"_desc-preproc_bold.nii.gz: non-finite values \(NaN/inf\) inside the brain "
                         r"mask, in \d+ of \d+ region/volume signals and 4 of 100 frames"),
    "too few frames": (
        None, {"fd_spikes": {k: 1.0 for k in range(1, 100, 4)}},
        r"_desc-confounds_timeseries.tsv: 0 of 100 frames left after censoring \(FD > 0.5 mm"),
    "confounds missing columns": (
        None, {"edit_confounds": lambda c: c.drop(columns=["white_matter", "csf"])},
        r"_desc-confounds_timeseries.tsv: cannot select the confounds of extract.denoise 'simple' "
        r"\(motion=full, wm_csf=basic, high_pass\)"),
    "confounds without FD": (
        None, {"edit_confounds": lambda c: c.drop(columns=["framewise_displacement"])},
        r"_desc-confounds_timeseries.tsv: expected a 'framewise_displacement' column"),
    "n/a rows in a confounds regressor": (
        _edit(_nan_rows), {},
        r"_desc-confounds_timeseries.tsv: n/a or non-finite values \(NaN, inf\) in regressors of extract.denoise "
        r"'simple': trans_x at frames 10-12; white_matter at frame 30 \(frames count from 0"),
    "inf in a confounds regressor": (
        _edit(_inf), {},
        r"_desc-confounds_timeseries.tsv: n/a or non-finite values \(NaN, inf\) .*: rot_y at frame 5 "),
    "text in a confounds column": (
        _edit(_text), {},
        r"_desc-confounds_timeseries.tsv: expected numbers or n/a, found text: trans_x at frame 5 \('abc'\)"),
    "confounds shorter than the BOLD": (
        _edit(lambda c: c.iloc[:60]), {},
        r"_desc-confounds_timeseries.tsv: expected one row per BOLD frame \(100 rows\), found 60"),
    "confounds header only": (
        _edit(lambda c: c.iloc[:0]), {},
        r"_desc-confounds_timeseries.tsv: expected one row per BOLD frame \(100 rows\), found 0"),
    "empty confounds": (_write("confounds", b""), {}, r"_desc-confounds_timeseries.tsv: empty file"),
    "garbled confounds": (_write("confounds", b"\xff\xfe\x00\x01garbage\n"), {},
                          r"_desc-confounds_timeseries.tsv: not a readable tab-separated table"),
    "invalid confounds JSON": (_write("confounds", b"{not json", ".json"), {},
                               r"_desc-confounds_timeseries.json: confounds sidecar is not valid JSON"),
    "empty confounds JSON": (_write("confounds", b"", ".json"), {},
                             r"_desc-confounds_timeseries.json: confounds sidecar is not valid JSON"),
    "garbled confounds JSON": (_write("confounds", b"\x1f\x8b garbled {", ".json"), {},
                               r"_desc-confounds_timeseries.json: confounds sidecar is not valid JSON"),
    "zero-byte mask": (_write("mask", b""), {},
                       r"_desc-brain_mask.nii.gz: not a readable NIfTI image: missing, truncated or corrupt"),
    "truncated mask": (_write("mask", _half), {},
                       r"_desc-brain_mask.nii.gz: not a readable NIfTI image: missing, truncated or corrupt"),
    "zero-byte BOLD": (_write("bold", b""), {},
                       r"_desc-preproc_bold.nii.gz: not a readable NIfTI image: missing, truncated or corrupt"),
    "truncated BOLD": (_write("bold", _half), {}, r"_desc-preproc_bold.nii.gz: truncated or corrupt"),
    "invalid-JSON sidecar": (_write("bold", b'{"RepetitionTime": 2.0,', ".json"), {},
                             r"_desc-preproc_bold.json: not valid JSON"),
    "empty sidecar": (_write("bold", b"", ".json"), {}, r"_desc-preproc_bold.json: not valid JSON"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_excluded_with_empty_outputs(tmp_path, capsys, case):
    damage, fixture_args, match = BAD_INPUTS[case]
    subject = make_subject(tmp_path, **fixture_args)
    if damage is not None:
        damage(subject)
    out = outputs(tmp_path)
    assert main(_cli_args(subject, out, extract_params())) == 0

    qc = storage.read_json(out["qc_out"])
    assert qc["status"] == "excluded"
    assert re.search(match, qc["reason"])
    errors = [line for line in capsys.readouterr().err.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "sub-01 excluded: " + qc["reason"] in errors[0]
    series = storage.read_timeseries(out["series_out"][0])
    assert series.data.shape == (0, 9) and series.labels[0] == "roi_001"
    assert series.metadata["status"] == "excluded" and series.metadata["reason"] == qc["reason"]
    vols = storage.read_volumes(out["volumes_out"])
    assert vols.data.shape == (0, 0) and vols.mask.shape == (1, 1, 1)


def test_n_a_outside_the_selected_regressors_is_kept(tmp_path):
    # fMRIPrep's n/a in the first row (derivatives, FD, DVARS) is filled by nilearn; n/a in a
    # column the preset does not use is no problem either.
    def edit(conf):
        conf.loc[30:33, "a_comp_cor_00"] = np.nan
        return conf

    subject = make_subject(tmp_path, edit_confounds=edit)
    assert np.isnan(storage.read_tsv(subject.confounds)["trans_x_derivative1"].iloc[0])
    qc = extract_subject("sub-01", subject.bold, subject.mask, [subject.atlas_dir], extract_params(),
                         confounds=subject.confounds, **outputs(tmp_path))
    assert qc["status"] == "included" and qc["n_frames_kept"] == 100


def test_excluded_qc_keeps_what_was_known(tmp_path):
    subject = make_subject(tmp_path, fd_spikes={k: 1.0 for k in range(1, 100, 4)})
    qc = extract_subject("sub-01", subject.bold, subject.mask, [subject.atlas_dir],
                         extract_params(), **outputs(tmp_path))
    assert qc["status"] == "excluded" and qc["tr"] == 2.0 and qc["n_timepoints"] == 100
    assert qc["max_fd"] == pytest.approx(1.0) and qc["n_frames_kept"] is None


def test_config_problems_fail_the_job(tmp_path):
    subject = make_subject(tmp_path, n=40)
    out = outputs(tmp_path)
    with pytest.raises(ConfigError, match=r"extract.volume_voxel_size=2 mm is finer than the BOLD voxels \(4.0, 4.0, 4.0\)"):
        extract_subject("sub-01", subject.bold, subject.mask, [subject.atlas_dir],
                        extract_params(volume_voxel_size=2, min_frames=10), **out)
    assert not out["qc_out"].exists()
    assert main(_cli_args(subject, out, extract_params(volume_voxel_size=2))) == 1
    assert main(_cli_args(subject, out, {**extract_params(), "bogus": 1})) == 1
    assert not out["qc_out"].exists()


def test_bad_atlas_table_fails_the_job(tmp_path):
    subject = make_subject(tmp_path, n=40)
    subject.atlas_labels.write_text("label\tname\n1\troi_001\n")
    with pytest.raises(InputDataError, match=r"octants/labels.tsv: expected columns 'index' and 'name'"):
        extract_subject("sub-01", subject.bold, subject.mask, [subject.atlas_dir],
                        extract_params(), **outputs(tmp_path))


def test_cli_rejects_confounds_that_nilearn_would_not_read(tmp_path):
    subject = make_subject(tmp_path, n=40)
    wrong = tmp_path / "sub-02_task-rest_desc-confounds_timeseries.tsv"
    wrong.write_text(subject.confounds.read_text())
    out = outputs(tmp_path)
    assert main(_cli_args(subject, out, extract_params(min_frames=10), confounds=wrong)) == 1
    assert not out["qc_out"].exists()


def test_params_need_every_schema_key():
    params = extract_params()
    del params["min_frames"]
    with pytest.raises(ConfigError, match=r"missing keys \['min_frames'\], unknown keys \[\]"):
        ExtractParams.from_dict(params)
    assert ExtractParams.from_dict(extract_params()).to_dict() == extract_params()


# --- several runs (inputs.runs: all) -------------------------------------------------------


def _run_pair(tmp_path, **second):
    """Two runs of one subject (their own folders): 100 frames with an FD spike, then 80 frames."""
    return make_subject(tmp_path / "run1", fd_spikes={40: 0.9}), make_subject(tmp_path / "run2", n=80, seed=1, **second)


def test_runs_are_denoised_one_by_one_then_joined_in_time(tmp_path):
    one, two = _run_pair(tmp_path)
    params = extract_params()
    separate = []
    for k, run in enumerate((one, two)):
        out = outputs(tmp_path / f"alone{k}")
        extract_subject("sub-01", run.bold, run.mask, [one.atlas_dir], params, **out, confounds=run.confounds)
        separate.append(out)
    joined = outputs(tmp_path / "joined")
    qc = extract_subject("sub-01", [one.bold, two.bold], [one.mask, two.mask], [one.atlas_dir], params, **joined,
                         confounds=[one.confounds, two.confounds])
    alone = [storage.read_json(out["qc_out"]) for out in separate]
    # Each run cleaned and standardised on its own (same masks here, so the same regions), then stacked.
    series = storage.read_timeseries(joined["series_out"][0])
    np.testing.assert_allclose(series.data, np.concatenate(
        [storage.read_timeseries(out["series_out"][0]).data for out in separate]), atol=1e-6)
    np.testing.assert_allclose(storage.read_volumes(joined["volumes_out"]).data, np.concatenate(
        [storage.read_volumes(out["volumes_out"]).data for out in separate]), atol=1e-3)
    assert qc["status"] == "included" and qc["n_timepoints"] == 180 and qc["tr"] == 2.0
    assert qc["n_frames_kept"] == alone[0]["n_frames_kept"] + alone[1]["n_frames_kept"] == series.data.shape[0]
    assert qc["fd"] == alone[0]["fd"] + alone[1]["fd"] and qc["max_fd"] == pytest.approx(0.9)
    known = [v for v in qc["fd"] if v is not None]
    assert qc["mean_fd"] == pytest.approx(np.mean(known))
    assert qc["mean_std_dvars"] == pytest.approx(
        (100 * alone[0]["mean_std_dvars"] + 80 * alone[1]["mean_std_dvars"]) / 180)
    assert [r["bold"] for r in qc["runs"]] == [one.bold.name, two.bold.name]
    assert [r["n_frames_kept"] for r in qc["runs"]] == [a["n_frames_kept"] for a in alone]
    assert qc["confounds"] == [one.confounds.name, two.confounds.name]
    # The kept frames count through the joined runs: run 2's frame k is frame 100 + k.
    frames = [storage.read_timeseries(out["series_out"][0]).metadata["frames"] for out in separate]
    assert series.metadata["frames"] == frames[0] + [100 + k for k in frames[1]]
    assert series.metadata["sources"]["bold"] == [one.bold.name, two.bold.name]
    assert [r["n_timepoints"] for r in series.metadata["runs"]] == [100, 80]


def test_runs_that_cannot_be_joined_exclude_the_subject_naming_the_run(tmp_path):
    one, two = _run_pair(tmp_path, tr=2.5)
    out = outputs(tmp_path / "joined")
    qc = extract_subject("sub-01", [one.bold, two.bold], [one.mask, two.mask], [one.atlas_dir], extract_params(),
                         **out, confounds=[one.confounds, two.confounds])
    assert qc["status"] == "excluded"
    assert qc["reason"] == (f"{two.bold}: TR 2.5 s differs from {one.bold.name}'s 2 s; runs joined in time must "
                            "share the repetition time")
    assert [r["tr"] for r in qc["runs"]] == [2.0, 2.5]  # what was known is kept
    other = make_subject(tmp_path / "run3", shape=(6, 6, 6))
    qc = extract_subject("sub-01", [one.bold, other.bold], [one.mask, other.mask], [one.atlas_dir], extract_params(),
                         **out, confounds=[one.confounds, other.confounds])
    assert qc["status"] == "excluded" and qc["reason"].startswith(f"{other.bold}: grid (shape (6, 6, 6)) differs")
    with pytest.raises(ValueError, match="2 BOLD runs, 1 masks and 2 confounds tables"):
        extract_subject("sub-01", [one.bold, two.bold], [one.mask], [one.atlas_dir], extract_params(), **out,
                        confounds=[one.confounds, two.confounds])


def test_an_atlas_in_another_template_space_is_recorded_and_warned_about(tmp_path, caplog):
    subject = make_subject(tmp_path)
    other = write_atlas_dir(tmp_path / "nlin6", subject.atlas, pd.read_csv(subject.atlas_labels, sep="\t"),
                            space="MNI152NLin6Asym")
    with caplog.at_level(logging.WARNING, logger="brainage.extract.subject"):
        qc = extract_subject("sub-01", subject.bold, subject.mask, [subject.atlas_dir, other], extract_params(),
                             series_out=[tmp_path / "a.parquet", tmp_path / "b.parquet"],
                             volumes_out=tmp_path / "v.parquet", qc_out=tmp_path / "qc.json", confounds=subject.confounds)
    assert {k: v["space"] for k, v in qc["atlases"].items()} == {"octants": "MNI152NLin2009cAsym", "nlin6": "MNI152NLin6Asym"}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "template" in r.getMessage()]
    assert warnings == [f"atlas nlin6 is defined in MNI152NLin6Asym, the BOLD {subject.bold.name} in MNI152NLin2009cAsym: "
                        "the atlas is placed on the BOLD grid by its affine, with no transform between the two templates"]


def test_runs_whose_masks_share_no_voxel_exclude_the_subject_naming_the_masks(tmp_path):
    one, two = _run_pair(tmp_path)
    corner = np.zeros((8, 8, 8), dtype=np.uint8)
    corner[0, 0, 0] = 1  # outside run 1's mask, which leaves a one-voxel border
    nib.save(nib.Nifti1Image(corner, one.truth["affine"]), two.mask)
    qc = extract_subject("sub-01", [one.bold, two.bold], [one.mask, two.mask], [one.atlas_dir], extract_params(),
                         **outputs(tmp_path / "joined"), confounds=[one.confounds, two.confounds])
    assert qc["status"] == "excluded"
    assert qc["reason"] == f"{one.mask}, {two.mask}: the runs' brain masks have no voxel in common"
