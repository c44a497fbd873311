"""brainage.preprocess.templateflow against a real moto S3 server on loopback holding a tiny templateflow bucket."""

import hashlib
import logging
import socket

import pandas as pd
import pytest
from s3_testing import put_object, reset_server

from brainage import storage
from brainage.errors import ConfigError, DownloadError
from brainage.preprocess.__main__ import main
from brainage.preprocess.templateflow import prefetch_templates, select_template_keys

BUCKET = "templateflow"
A, B, C = "MNI152NLin2009cAsym", "MNIPediatricAsym", "fsaverage"
ARCHIVE = {
    f"tpl-{A}/template_description.json": b'{"Name": "A"}',
    f"tpl-{A}/tpl-{A}_res-01_T1w.nii.gz": b"A1" * 10,
    f"tpl-{A}/tpl-{A}_res-02_T1w.nii.gz": b"A2" * 5,
    f"tpl-{A}/tpl-{A}_res-02_desc-brain_mask.nii.gz": b"A2m",
    f"tpl-{A}/tpl-{A}_res-08_T1w.nii.gz": b"A8",
    f"tpl-{A}/tpl-{A}_desc-brain_mask.nii.gz": b"no res",
    f"tpl-{B}/template_description.json": b'{"Name": "B"}',
    f"tpl-{B}/cohort-1/tpl-{B}_cohort-1_res-1_T1w.nii.gz": b"B1",
    f"tpl-{B}/cohort-1/tpl-{B}_cohort-1_res-2_T1w.nii.gz": b"B2",
    f"tpl-{B}/cohort-1/tpl-{B}_cohort-1_res-3_T1w.nii.gz": b"B3",
    f"tpl-{C}/tpl-{C}_den-164k_hemi-L_sphere.surf.gii": b"not requested",
}
# Requested: A and B at res 1 (params) + A at res 2 (the output space); never C, never res-3/res-8.
EXPECTED = sorted([
    f"tpl-{A}/template_description.json", f"tpl-{A}/tpl-{A}_res-01_T1w.nii.gz", f"tpl-{A}/tpl-{A}_res-02_T1w.nii.gz",
    f"tpl-{A}/tpl-{A}_res-02_desc-brain_mask.nii.gz", f"tpl-{A}/tpl-{A}_desc-brain_mask.nii.gz",
    f"tpl-{B}/template_description.json", f"tpl-{B}/cohort-1/tpl-{B}_cohort-1_res-1_T1w.nii.gz",
])


@pytest.fixture
def endpoint(s3_server):
    reset_server(s3_server)
    for key, body in ARCHIVE.items():
        put_object(s3_server, key, body, bucket=BUCKET)
    return s3_server


def _params(endpoint, templates=(B,), resolutions=(1,)):
    return {"templates": list(templates), "resolutions": list(resolutions), "home": "ignored",
            "bucket": BUCKET, "endpoint_url": endpoint}


# ---------------------------------------------------------------- selection


def test_select_compares_res_as_integers_and_keeps_files_without_res():
    keys = ["tpl-X/tpl-X_res-01_T1w.nii.gz", "tpl-X/tpl-X_res-1_T2w.nii.gz", "tpl-X/tpl-X_res-02_T1w.nii.gz",
            "tpl-X/tpl-X_res-10_T1w.nii.gz", "tpl-X/template_description.json", "tpl-X/tpl-X_desc-brain_mask.nii.gz",
            "tpl-X/LICENSE", "tpl-X/tpl-X_RRID.bib", "tpl-X/cohort-2/tpl-X_cohort-2_res-1_T1w.nii.gz",
            "tpl-X/cohort-2/tpl-X_cohort-2_res-2_T1w.nii.gz"]
    assert select_template_keys(keys, ["X"], [1]) == sorted([
        "tpl-X/tpl-X_res-01_T1w.nii.gz", "tpl-X/tpl-X_res-1_T2w.nii.gz", "tpl-X/template_description.json",
        "tpl-X/tpl-X_desc-brain_mask.nii.gz", "tpl-X/LICENSE", "tpl-X/tpl-X_RRID.bib",
        "tpl-X/cohort-2/tpl-X_cohort-2_res-1_T1w.nii.gz"])
    # res-10 is index 10, not 1 followed by 0; res-02 and res-2 are the same index.
    assert select_template_keys(keys, ["X"], [10]) == sorted(
        ["tpl-X/tpl-X_res-10_T1w.nii.gz", *[k for k in keys if "res-" not in k]])
    assert "tpl-X/cohort-2/tpl-X_cohort-2_res-2_T1w.nii.gz" in select_template_keys(keys, ["X"], [2])
    assert "tpl-X/tpl-X_res-02_T1w.nii.gz" in select_template_keys(keys, ["X"], [2])


def test_select_matches_whole_template_folders_sorted_and_deduplicated():
    keys = ["tpl-XY/a.json", "tpl-X/b.json", "tpl-X/a.json", "tpl-X/a.json", "other/tpl-X/c.json", "tpl-X.json"]
    assert select_template_keys(keys, ["X"], []) == ["tpl-X/a.json", "tpl-X/b.json"]
    assert select_template_keys(keys, ["X", "XY", "X"], [1]) == ["tpl-X/a.json", "tpl-X/b.json", "tpl-XY/a.json"]
    assert select_template_keys(keys, [], [1]) == []


# ---------------------------------------------------------------- prefetch


def test_prefetch_fills_the_home_in_the_bucket_layout_and_lists_it(endpoint, tmp_path, caplog):
    home, out = tmp_path / "tf", tmp_path / "tf" / "templates.tsv"
    with caplog.at_level(logging.INFO, logger="brainage.preprocess.templateflow"):
        table = prefetch_templates(_params(endpoint), f"{A}:res-2", home, out, progress=False)
    assert sorted(p.relative_to(home).as_posix() for p in home.rglob("*") if p.is_file() and p != out) == EXPECTED
    for key in EXPECTED:
        assert (home / key).read_bytes() == ARCHIVE[key]
    assert list(table.columns) == ["template", "key", "path", "size", "md5", "status"]
    assert sorted(table.key) == EXPECTED and set(table.status) == {"fetched"}
    assert dict(zip(table.key, table.template))[f"tpl-{B}/template_description.json"] == B
    assert all(table.path == [str(home / key) for key in table.key])
    assert list(table["size"]) == [len(ARCHIVE[k]) for k in table.key]
    assert list(table.md5) == [hashlib.md5(ARCHIVE[k]).hexdigest() for k in table.key]
    pd.testing.assert_frame_equal(storage.read_tsv(out), table, check_dtype=False)
    total_mb = sum(len(ARCHIVE[k]) for k in EXPECTED) / 1e6
    assert f"7 files of {A}, {B}, {total_mb:.1f} MB; 0 were already present" in caplog.text


def test_second_run_fetches_nothing_and_a_changed_file_is_fetched_again(endpoint, tmp_path):
    home, out = tmp_path / "tf", tmp_path / "templates.tsv"
    prefetch_templates(_params(endpoint), f"{A}:res-2", home, out, progress=False)
    mtimes = {key: (home / key).stat().st_mtime_ns for key in EXPECTED}
    again = prefetch_templates(_params(endpoint), f"{A}:res-2", home, out, progress=False)
    assert set(again.status) == {"present"} and sorted(again.key) == EXPECTED
    assert mtimes == {key: (home / key).stat().st_mtime_ns for key in EXPECTED}
    assert set(storage.read_tsv(out).status) == {"present"}
    damaged = f"tpl-{A}/tpl-{A}_res-02_T1w.nii.gz"
    (home / damaged).write_bytes(b"X" * len(ARCHIVE[damaged]))  # same size, other bytes
    third = prefetch_templates(_params(endpoint), f"{A}:res-2", home, out, progress=False)
    assert dict(zip(third.key, third.status))[damaged] == "fetched"
    assert (home / damaged).read_bytes() == ARCHIVE[damaged]


@pytest.mark.parametrize(
    ("space", "extra"),
    [(A, []), (f"{A}:res-native", []), (f"{A}:res-8", [f"tpl-{A}/tpl-{A}_res-08_T1w.nii.gz"]),
     (f"{B}:cohort-1:res-3", [f"tpl-{B}/cohort-1/tpl-{B}_cohort-1_res-3_T1w.nii.gz"])],
)
def test_the_output_space_adds_its_template_at_its_resolution(endpoint, tmp_path, space, extra):
    params = _params(endpoint, templates=[], resolutions=[1])
    table = prefetch_templates(params, space, tmp_path / "tf", tmp_path / "t.tsv", progress=False)
    name = space.split(":")[0]
    base = select_template_keys(list(ARCHIVE), [name], [1])
    assert sorted(table.key) == sorted(base + extra) and set(table.template) == {name}


def test_unknown_template_is_a_config_error_naming_it_and_the_archive(endpoint, tmp_path):
    params = _params(endpoint, templates=[B, "MNI152NLin2009cAsymm"])
    with pytest.raises(ConfigError, match=rf"template 'MNI152NLin2009cAsymm' has no file in bucket 'templateflow' "
                                          rf"at {endpoint}; check preprocess.templateflow.templates"):
        prefetch_templates(params, A, tmp_path / "tf", tmp_path / "t.tsv", progress=False)
    assert not (tmp_path / "t.tsv").exists() and not (tmp_path / "tf").exists()


def test_a_file_that_cannot_be_fetched_is_a_download_error_listing_it(endpoint, tmp_path):
    private = f"tpl-{B}/tpl-{B}_desc-private_mask.nii.gz"
    put_object(endpoint, private, b"403 for anonymous readers", bucket=BUCKET, public=False)
    with pytest.raises(DownloadError, match=rf"1 TemplateFlow file\(s\) could not be fetched from bucket templateflow"
                                            rf" at {endpoint} .*{private} \(HTTP 403"):
        prefetch_templates(_params(endpoint), A, tmp_path / "tf", tmp_path / "t.tsv", progress=False)
    assert not (tmp_path / "t.tsv").exists()


def test_missing_bucket_and_unreachable_endpoint_are_download_errors(endpoint, tmp_path, monkeypatch):
    params = _params(endpoint) | {"bucket": "no-such-bucket"}
    with pytest.raises(DownloadError, match=r"TemplateFlow archive \(preprocess.templateflow.bucket / endpoint_url\): "
                                            r"bucket 'no-such-bucket' does not exist at"):
        prefetch_templates(params, A, tmp_path / "tf", tmp_path / "t.tsv", progress=False)
    with socket.socket() as sock:  # a port that nothing listens on: connections are refused
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    # The client's retries back off for ~15 s in all; skip the waiting, not the retries.
    monkeypatch.setattr("brainage.download.s3.time.sleep", lambda seconds: None)
    with pytest.raises(DownloadError, match=rf"TemplateFlow archive .*: cannot reach {closed} \(bucket templateflow\)"):
        prefetch_templates(_params(closed), A, tmp_path / "tf", tmp_path / "t.tsv", progress=False)


def test_cli_verb_fetches_and_reports_errors_as_exit_code_1(endpoint, tmp_path):
    out = tmp_path / "tf" / "brainage_templates.tsv"
    argv = ["templateflow", "--params", '{"templates": [], "resolutions": [2]}',
            "--archive", f'{{"bucket": "{BUCKET}", "endpoint_url": "{endpoint}"}}',
            "--space", f"{A}:res-2", "--home", str(tmp_path / "tf"), "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    assert sorted(storage.read_tsv(out).key) == select_template_keys(list(ARCHIVE), [A], [2])
    argv[2] = '{"templates": ["Nope"], "resolutions": [2]}'
    assert main(argv) == 1
