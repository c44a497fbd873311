"""brainage.download.indi_fetch: raw BIDS roots without a dataset_description.json in the bucket get a minimal one."""

import json
import logging

import pytest
from indi_layouts import PREFIXES, write_raw_bids
from s3_testing import reset_server, upload_tree

from brainage import storage
from brainage._version import source_version
from brainage.download.indi_fetch import fetch_dataset

ENTRY = dict(pipeline="cpac", strategy="filt_global", derivative="rois_cc200", sites=[], age_min=None, age_max=None,
             max_subjects=None, qc_pass=False, task="rest", sessions=[])
WRITTEN = "written by brainage: the INDI bucket has no dataset_description.json at this BIDS root"


@pytest.fixture
def server(s3_server):
    reset_server(s3_server)
    return s3_server


def _fetch(server, tmp_path, name, drop):
    """Lay ``name`` out in a fresh bucket without the descriptions in ``drop`` (keys below the prefix), fetch it."""
    source = tmp_path / "bucket"
    write_raw_bids(source, name, n_subjects=4, seed=0)
    for relative in drop:
        (source / PREFIXES[name] / relative).unlink()
    upload_tree(server, source)
    out = tmp_path / "out"
    indi = {"endpoint_url": server, "max_workers": 4, "retries": 1, "backoff_s": 0.001, "timeout_s": 10}
    fetch_dataset({"name": name, **ENTRY}, indi, 0, out, tmp_path / "participants.tsv", tmp_path / "files.tsv",
                  tmp_path / "exclusions.tsv", progress=False)
    return source / PREFIXES[name], out, storage.read_tsv(tmp_path / "files.tsv")


def _expected(name):
    return {"Name": name, "BIDSVersion": "1.8.0", "DatasetType": "raw",
            "GeneratedBy": [{"Name": "brainage", "Version": source_version(), "Description": WRITTEN}]}


def test_a_site_root_without_description_gets_one_and_the_other_keeps_its_bytes(server, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="brainage.download.indi_fetch"):
        source, out, files = _fetch(server, tmp_path, "adhd200", drop=["KKI/dataset_description.json"])
    written = out / "KKI" / "dataset_description.json"
    assert json.loads(written.read_text()) == _expected("adhd200 KKI (INDI raw BIDS)")
    kept = out / "NYU" / "dataset_description.json"
    assert kept.read_bytes() == (source / "NYU" / "dataset_description.json").read_bytes()
    # files.tsv lists what came from the bucket: NYU's description, not the one written for KKI.
    descriptions = files.loc[files["kind"] == "description", "path"]
    assert set(descriptions) == {str(kept)}
    assert f"adhd200: no dataset_description.json in the bucket at {PREFIXES['adhd200']}/KKI/" in caplog.text
    assert not [p for p in out.rglob(".tmp-*")]


def test_a_dataset_root_without_description_gets_one(server, tmp_path):
    _, out, files = _fetch(server, tmp_path, "nki_rs", drop=["dataset_description.json"])
    assert json.loads((out / "dataset_description.json").read_text()) == _expected(
        "nki_rs RawDataBIDSLatest (INDI raw BIDS)")
    assert "description" not in set(files["kind"])


def test_roots_with_descriptions_are_left_alone(server, tmp_path):
    source, out, _ = _fetch(server, tmp_path, "corr", drop=[])
    for site in ("BMB_1", "IPCAS_1"):
        assert (out / site / "dataset_description.json").read_bytes() == (
            source / site / "dataset_description.json").read_bytes()
