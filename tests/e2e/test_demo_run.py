"""The default workflow on the embedded demo cohort: outputs, planted effect recovered, reruns."""

import json
import re
import zipfile

import pandas as pd
import pytest
import yaml

from snakemake_helpers import make_workdir, planned_jobs, snakemake

pytestmark = pytest.mark.e2e

EXPECTED_OUTPUTS = [
    "resources/demo/participants.tsv",
    "resources/atlases/kmeans100/atlas.json",
    "resources/atlases/kmeans100/atlas.nii.gz",
    "resources/atlases/kmeans100/labels.tsv",
    "results/participants.tsv",
    "results/participants_exclusions.tsv",
    "results/extract/sub-001/sub-001_atlas-kmeans100_timeseries.parquet",
    "results/extract/sub-001/sub-001_volumes.parquet",
    "results/extract/sub-001/sub-001_qc.json",
    "results/dataset/cohort.parquet",
    "results/dataset/splits.tsv",
    "results/dataset/exclusions.tsv",
    "results/models/model-cnn_rnn/fold-4/predictions.parquet",
    "results/models/model-cnn_rnn/fold-4/card.json",
    "results/models/model-cnn_rnn/fold-4/checkpoint.pt",
    "results/evaluate/predictions.parquet",
    "results/evaluate/metrics.tsv",
    "results/report.html",
    "results/report_figures/cnn_rnn.png",
    "results/derivatives/brainage/dataset_description.json",
    "results/derivatives/brainage/atlases/atlas-kmeans100/atlas-kmeans100_dseg.tsv",
]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One full run of the default configuration, as the README's first command does it."""
    workdir = make_workdir(tmp_path_factory.mktemp("demo"))
    snakemake(workdir, "--cores", "2")
    return workdir


def test_expected_outputs_exist(demo_run):
    missing = [p for p in EXPECTED_OUTPUTS if not (demo_run / p).is_file()]
    assert not missing
    # No temporary file of an atomic write is left behind.
    assert not list(demo_run.glob("results/**/.tmp-*"))


def test_derivatives_have_a_series_and_a_matrix_per_cohort_subject(demo_run):
    splits = pd.read_csv(demo_run / "results/dataset/splits.tsv", sep="\t")
    folder = demo_run / "results/derivatives/brainage"
    for kind in ("stat-mean_timeseries.tsv", "stat-pearsoncorrelation_relmat.tsv"):
        files = sorted(folder.glob(f"sub-*/func/sub-*_task-rest_space-*_seg-kmeans100_{kind}"))
        assert [f.parts[-3] for f in files] == sorted(splits["participant_id"])
    assert json.loads((folder / "dataset_description.json").read_text())["DatasetType"] == "derivative"


def test_every_model_beats_dummy_and_learns_the_planted_effect(demo_run):
    metrics = pd.read_csv(demo_run / "results/evaluate/metrics.tsv", sep="\t").set_index("model")
    assert list(metrics.index) == ["dummy", "connectome_ridge", "roi_gru", "cnn_rnn", "stack"]
    assert (metrics["n"] == 60).all()
    dummy = metrics.loc["dummy", "mae"]
    for model in ["connectome_ridge", "roi_gru", "cnn_rnn", "stack"]:
        assert metrics.loc[model, "mae"] < 0.8 * dummy, metrics
        assert metrics.loc[model, "r"] > 0.5, metrics
        # better than the dummy beyond chance: the paired 95 % interval of the difference excludes 0
        assert metrics.loc[model, "delta_mae_vs_dummy_ci_high"] < 0, metrics
    for model, row in metrics.iterrows():
        assert row["mae_ci_low"] <= row["mae"] <= row["mae_ci_high"], metrics
    assert metrics.loc["connectome_ridge", "delta_mae_vs_ridge"] == 0


def test_no_subject_is_lost(demo_run):
    manifest = pd.read_csv(demo_run / "results/participants.tsv", sep="\t")
    exclusions = pd.read_csv(demo_run / "results/dataset/exclusions.tsv", sep="\t")
    splits = pd.read_csv(demo_run / "results/dataset/splits.tsv", sep="\t")
    assert len(manifest) == 60
    assert set(splits["participant_id"]) | set(exclusions["participant_id"]) == set(manifest["participant_id"])


def test_report_shows_metrics_and_methods(demo_run):
    html = (demo_run / "results/report.html").read_text()
    for model in ["dummy", "connectome_ridge", "roi_gru", "cnn_rnn", "stack"]:
        assert model in html
    assert "No subject was excluded." in html
    assert html.count("<img") >= 4
    # the two demo sites, each with its own accuracy row, and every metric with its interval
    sites = html[html.index("<h3>Accuracy per site</h3>"):]
    sites = sites[:sites.index("</table>")]
    assert sites.count("<tr>") == 2 and "siteA" in sites and "siteB" in sites  # a body row per site
    assert re.search(r"<td>\d+\.\d\d \[\d+\.\d\d, \d+\.\d\d\]</td>", html)


def test_nothing_to_do_after_a_finished_run(demo_run):
    assert planned_jobs(snakemake(demo_run, "-n")) == {}


def _with_config(workdir, config):
    (workdir / "config" / "test.yaml").write_text(yaml.safe_dump(config))


def test_model_parameter_change_reruns_only_that_model(demo_run):
    _with_config(demo_run, {"models": {"roi_gru": {"hidden": 16}}})
    try:
        jobs = planned_jobs(snakemake(demo_run, "-n"))
    finally:
        (demo_run / "config" / "test.yaml").unlink()
    # roi_gru's five folds, and the stack that reads their predictions; not the export (a model setting
    # is not among the sections whose hash it records).
    assert jobs == {"all": 1, "train_model": 10, "evaluate": 1, "report": 1}


def test_extraction_parameter_change_reruns_extraction_and_after(demo_run):
    _with_config(demo_run, {"extract": {"fd_threshold": 0.4}})
    try:
        jobs = planned_jobs(snakemake(demo_run, "-n"))
    finally:
        (demo_run / "config" / "test.yaml").unlink()
    assert jobs == {
        "all": 1, "extract_subject": 60, "dataset_build": 1, "train_model": 25, "evaluate": 1, "report": 1,
        "export_derivatives": 1,
    }


def test_stage_code_change_reruns_that_stage(demo_run):
    module = demo_run / "workflow" / "brainage" / "evaluate" / "__init__.py"
    original = module.read_text()
    module.write_text(original + "\n# a change\n")
    try:
        jobs = planned_jobs(snakemake(demo_run, "-n"))
    finally:
        module.write_text(original)
    assert jobs == {"all": 1, "evaluate": 1, "report": 1}


def test_model_cards_carry_provenance(demo_run):
    card = json.loads((demo_run / "results/models/model-cnn_rnn/fold-0/card.json").read_text())
    assert card["model"] == "cnn_rnn"
    assert card["fold"] == 0
    assert card["params"]["window"] == 24


def test_snakemake_report_holds_our_page_the_figures_and_metrics_with_captions(demo_run, tmp_path):
    """`snakemake --report report.zip`: Snakemake's own report lists our files with their captions."""
    snakemake(demo_run, "--report", str(tmp_path / "report.zip"), "--cores", "1")
    with zipfile.ZipFile(tmp_path / "report.zip") as archive:
        names = archive.namelist()
        page = archive.read("report/report.html").decode()
    listed = sorted(name.rsplit("/", 1)[1] for name in names if name.startswith("report/data/raw/"))
    assert listed == sorted(["report.html", "metrics.tsv", *(f"{m}.png" for m in
                                                             ["dummy", "connectome_ridge", "roi_gru", "cnn_rnn", "stack"])])
    assert "Model <strong>cnn_rnn" in page  # the figure caption, with its model
    assert "One row per model and set" in page and "honest evaluation against a dummy" in page
