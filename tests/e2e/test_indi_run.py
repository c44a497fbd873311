"""INDI path end to end: a real S3-protocol server on loopback holding real ABIDE PCP data in the INDI layout."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from indi_layouts import write_raw_bids
from pcp_volumes import write_pcp_func
from s3_testing import FaultProxy, moto_server, upload_tree

from brainage import storage
from snakemake_helpers import REPO, make_workdir, planned_jobs, snakemake

pytestmark = pytest.mark.e2e

ABIDE = "data/Projects/ABIDE_Initiative"
SITES = ["CMU", "OHSU", "UCLA_2"]  # 79 real subjects, adults and children
MISSING = "OHSU_0050142"  # its .1D is kept out of the bucket: a 404 for one subject


@pytest.fixture(scope="module")
def bucket_root(shared_data, tmp_path_factory):
    """The real ABIDE PCP cc200 subjects of three sites in the exact INDI key layout."""
    root = tmp_path_factory.mktemp("fcp-indi")
    subprocess.run(
        [sys.executable, REPO.parent / "shared" / "tools" / "make_indi_mirror.py",
         shared_data / "abide1_pcp_cpac_filtglobal_cc200", root, "--sites", ",".join(SITES)],
        check=True, capture_output=True,
    )
    (root / ABIDE / "Outputs/cpac/filt_global/rois_cc200" / f"{MISSING}_rois_cc200.1D").unlink()
    return root


@pytest.fixture(scope="module")
def endpoint(bucket_root):
    with moto_server() as url:
        upload_tree(url, bucket_root)
        yield url


def _config(url, **overrides):
    config = {
        "inputs": {"source": "indi"},
        "datasets": [{"name": "abide_pcp", "derivative": "rois_cc200"}],
        "indi": {"endpoint_url": url, "retries": 8, "backoff_s": 0.05, "timeout_s": 10},
        "train": {"models": ["dummy", "connectome_ridge"]},
        "dataset": {"n_folds": 3, "test_sites": ["UCLA_2"]},
    }
    config.update(overrides)
    return config


def test_abide_rois_through_a_faulty_link(tmp_path, shared_data, bucket_root, endpoint):
    """Download through a proxy that drops, truncates and 503s; then the whole workflow on real series."""
    with FaultProxy(endpoint, seed=3, p_drop=0.05, p_truncate=0.05, p_503=0.05) as proxy:
        work = make_workdir(tmp_path / "run", _config(proxy.url))
        snakemake(work, "--cores", "2")
    assert sum(proxy.faults.values()) > 0

    real = pd.read_csv(shared_data / "abide1_pcp_cpac_filtglobal_cc200" / "participants.tsv", sep="\t")
    real = real[real.site.isin(SITES)]
    manifest = pd.read_csv(work / "results/participants.tsv", sep="\t")
    expected = real[real.file_id != MISSING]
    assert sorted(manifest.participant_id) == sorted(expected.participant_id)
    merged = manifest.merge(expected, on="participant_id", suffixes=("", "_real"))
    np.testing.assert_allclose(merged.age, merged.age_real)
    assert (merged.source_id == merged.file_id).all() and (merged.sex == merged.sex_real).all()

    exclusions = pd.read_csv(work / "results/dataset/exclusions.tsv", sep="\t")
    missing = exclusions[exclusions.participant_id == "sub-" + MISSING.split("_")[-1]]
    assert missing.stage.tolist() == ["download"] and "404" in missing.reason.iloc[0]
    no_file = (pd.read_csv(bucket_root / ABIDE / "Phenotypic_V1_0b_preprocessed1.csv").FILE_ID == "no_filename").sum()
    assert exclusions.reason.str.contains("no_filename").sum() == no_file > 0

    # The converted series are the real PCP values (float32), frame for frame.
    table = pd.read_parquet(shared_data / "abide1_pcp_cpac_filtglobal_cc200" / "timeseries_cc200.parquet")
    pid = expected.participant_id.iloc[0]
    series = storage.read_timeseries(work / f"results/pcp/{pid}/{pid}_timeseries.parquet")
    truth = table[table.participant_id == pid].sort_values("t").filter(like="roi_").to_numpy()
    np.testing.assert_array_equal(series.data, truth.astype(np.float32))

    metrics = pd.read_csv(work / "results/evaluate/metrics.tsv", sep="\t")
    assert set(zip(metrics.model, metrics["set"])) == {
        (m, s) for m in ("dummy", "connectome_ridge") for s in ("cv", "test")
    }
    report = (work / "results/report.html").read_text()
    assert "sub-" + MISSING.split("_")[-1] in report and "UCLA_2" in report
    assert "<title>brainage report: abide_pcp</title>" in report

    # The ready-made series, exported for every cohort subject: named from the config (PCP file names
    # carry no BIDS entities), the atlas from the derivative (rois_cc200), no atlas folder.
    cohort = storage.read_table(work / "results/dataset/cohort.parquet")
    exported = sorted((work / "results/derivatives/brainage").glob("sub-*/func/*_stat-mean_timeseries.tsv"))
    assert [f.name for f in exported] == [
        f"{pid}_task-rest_space-MNI152NLin2009cAsym_seg-cc200_stat-mean_timeseries.tsv"
        for pid in sorted(cohort.participant_id)]
    assert not (work / "results/derivatives/brainage/atlases").exists()

    assert planned_jobs(snakemake(work, "-n", "--cores", "2")) == {}
    # Nothing changed but how the bucket is reached (another endpoint, fewer workers): no download,
    # conversion, training or export reruns; only the report, whose methods text names the endpoint.
    config = _config(endpoint)
    config["indi"]["max_workers"] = 3
    (work / "config/test.yaml").write_text(yaml.safe_dump(config))
    assert planned_jobs(snakemake(work, "-n", "--cores", "2")) == {"report": 1, "all": 1}
    # A filter is what is downloaded: the download reruns, and what follows it.
    config["datasets"][0]["sites"] = ["CMU", "OHSU"]
    (work / "config/test.yaml").write_text(yaml.safe_dump(config))
    jobs = planned_jobs(snakemake(work, "-n", "--cores", "2"))
    assert jobs["indi_fetch"] == 1 and jobs["report"] == 1


def test_unreachable_endpoint_is_one_clear_error(tmp_path):
    work = make_workdir(tmp_path / "run", _config("http://127.0.0.1:9", **{"indi": {
        "endpoint_url": "http://127.0.0.1:9", "retries": 1, "backoff_s": 0.01, "timeout_s": 2}}))
    result = snakemake(work, "--cores", "1", check=False)
    assert result.returncode != 0
    log = (work / "logs/indi_fetch/abide_pcp.log").read_text()
    assert "cannot reach http://127.0.0.1:9" in log and "indi.endpoint_url" in log


def test_abide_func_preproc_through_extraction(tmp_path, shared_data, bucket_root, endpoint):
    """func_preproc volumes (synthetic, planted age signal) go through extraction and feed cnn_rnn."""
    pheno = pd.read_csv(bucket_root / ABIDE / "Phenotypic_V1_0b_preprocessed1.csv")
    chosen = pheno[pheno.SITE_ID.isin(["CMU", "OHSU"]) & (pheno.FILE_ID != "no_filename")]
    func_root = tmp_path / "func-bucket"
    write_pcp_func(func_root, pd.DataFrame({
        "file_id": chosen.FILE_ID, "age": chosen.AGE_AT_SCAN, "site": chosen.SITE_ID}), seed=1)
    upload_tree(endpoint, func_root)
    config = _config(endpoint)
    config["datasets"] = [{"name": "abide_pcp", "derivative": "func_preproc", "sites": ["CMU", "OHSU"],
                           "max_subjects": 16}]
    config["dataset"] = {"n_folds": 2}
    config["atlases"] = [{"name": "file", "id": "cc200",
                          "path": str(shared_data.parent / "data/abide_pcp_atlases/CC200.nii.gz")}]
    # The synthetic volumes are a crop of the PCP grid: most CC200 regions lie outside their field of view.
    config["extract"] = {"high_pass": None, "low_pass": None, "volume_voxel_size": 6, "on_region_loss": "warn"}
    config["train"] = {"models": ["dummy", "cnn_rnn"]}
    config["models"] = {"cnn_rnn": {"channels": [4], "hidden": 8, "window": 8, "epochs": 2, "batch_size": 4}}
    work = make_workdir(tmp_path / "run", config)
    snakemake(work, "--cores", "2")
    cohort = storage.read_table(work / "results/dataset/cohort.parquet")
    # max_subjects draws 16 of the CMU/OHSU subjects; all have volumes and all are analysed.
    assert len(cohort) == 16 and set(cohort.participant_id) <= {f"sub-{s:07d}" for s in chosen.SUB_ID}
    pid = cohort.participant_id.iloc[0]
    assert storage.read_volumes(work / f"results/extract/{pid}/{pid}_volumes.parquet").data.shape[0] == 60
    predictions = pd.read_parquet(work / "results/evaluate/predictions.parquet")
    assert set(predictions.model) == {"dummy", "cnn_rnn"}
    # Exported under names from the config (task-rest_space-<inputs.space>), with the atlas and the TR.
    folder = work / "results/derivatives/brainage"
    matrices = folder.glob("sub-*/func/sub-*_task-rest_space-*_seg-cc200_stat-pearsoncorrelation_relmat.tsv")
    assert len(list(matrices)) == 16
    sidecar = next(folder.glob("sub-*/func/*_stat-mean_timeseries.json"))
    assert json.loads(sidecar.read_text())["RepetitionTime"] > 0
    assert (folder / "atlases/atlas-cc200/atlas-cc200_dseg.tsv").is_file()
    # Derivatives bypass fMRIPrep: its rule is not in the DAG, even when extraction is forced.
    jobs = planned_jobs(snakemake(work, "-n", "--forcerun", "extract_subject", "--cores", "2"))
    assert jobs["extract_subject"] == 16 and "fmriprep_subject" not in jobs and "templateflow_prefetch" not in jobs
    assert not (work / "results" / "fmriprep").exists()


@pytest.mark.parametrize("dataset", ["adhd200", "nki_rs", "corr"])
def test_raw_bids_datasets_download_for_preprocessing(tmp_path, endpoint, dataset):
    """Raw BIDS datasets are fetched (indi_download, which needs no fMRIPrep set-up) in their BIDS layout."""
    expected = write_raw_bids(tmp_path / "bucket", dataset, n_subjects=4, seed=0)
    upload_tree(endpoint, tmp_path / "bucket")
    work = make_workdir(tmp_path / "run", _config(endpoint, datasets=[{"name": dataset}]))
    snakemake(work, "--cores", "1", "indi_download")
    manifest = pd.read_csv(work / f"resources/indi/{dataset}/participants.tsv", sep="\t", dtype={"participant_id": str})
    assert sorted(manifest.participant_id) == sorted(expected.participant_id)
    files = pd.read_csv(work / f"resources/indi/{dataset}/files.tsv", sep="\t")
    assert {"anat", "bold"} <= set(files.kind) and all((work / p).is_file() for p in files.path)
    assert all(f"/{pid}/" in p for pid, p, k in zip(files.participant_id, files.path, files.kind) if k in ("anat", "bold"))
    # The analysis needs fMRIPrep, checked before any job is submitted: here there is no licence.
    env = {k: v for k, v in os.environ.items() if k != "FS_LICENSE"}
    result = snakemake(work, "--cores", "1", check=False, env=env)
    assert result.returncode != 0
    assert "fMRIPrep cannot run: fMRIPrep needs a FreeSurfer license file" in result.stdout + result.stderr
