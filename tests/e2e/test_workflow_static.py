"""Static checks of the workflow: lint, formatting, schema errors and dry-run DAGs."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fmriprep_layouts import SPACE, write_run
from snakemake_helpers import REPO, make_workdir, planned_jobs, snakemake

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("configfile", [None, "abide_pcp_cc200.yaml"])
def test_lint_is_clean(tmp_path, configfile):
    """The default workflow, and the INDI rules that only exist when data are downloaded."""
    config = yaml.safe_load((REPO / "config" / configfile).read_text()) if configfile else None
    result = snakemake(make_workdir(tmp_path, config), "--lint", check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_snakefmt_check_is_clean():
    snakefmt = Path(sys.executable).parent / "snakefmt"
    result = subprocess.run(
        [str(snakefmt), "--check", "Snakefile", "rules"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_default_dag_has_every_stage(tmp_path):
    jobs = planned_jobs(snakemake(make_workdir(tmp_path), "-n", "--cores", "2"))
    n_subjects, n_folds, n_models = 60, 5, 5  # dummy, connectome_ridge, roi_gru, cnn_rnn, stack
    assert jobs == {
        "all": 1,
        "atlas": 1,
        "demo_cohort": 1,
        "participants_manifest": 1,
        "extract_subject": n_subjects,
        "dataset_build": 1,
        "train_model": n_folds * n_models,
        "evaluate": 1,
        "report": 1,
        "export_derivatives": 1,
    }


def test_directory_option_reads_the_shipped_config_and_writes_there(tmp_path):
    """`snakemake --snakefile REPO/Snakefile --directory DIR`: DIR holds no config/, so the workflow's own
    config/config.yaml is read (before, Snakemake stopped: "config/config.yaml ... not present"), and
    Snakemake's state and every output land in DIR. (No --configfile here: Snakemake skips a missing
    default config file when one is given.)"""
    workdir = tmp_path / "run"
    workdir.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--snakefile", str(REPO / "Snakefile"),
         "--directory", str(workdir)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    jobs = planned_jobs(result)
    assert jobs["demo_cohort"] == 1 and jobs["extract_subject"] == 60 and jobs["train_model"] == 25
    assert (workdir / ".snakemake").is_dir() and not (tmp_path / ".snakemake").exists()


def test_runs_all_gives_one_extraction_every_run_of_the_session_in_order(tmp_path):
    """inputs.runs: all: the subject's runs of the first session reach one job, BOLD, mask and confounds in
    the same run order; a subject with one run gets one of each."""
    deriv = tmp_path / "data" / "derivatives"
    for run in (2, 1):
        write_run(deriv, "01", ses="1", run=run)
    write_run(deriv, "01", ses="2", run=1)
    for label in ("02", "03", "04"):
        write_run(deriv, label)
    participants = tmp_path / "data" / "participants.tsv"
    participants.write_text("participant_id\tage\tsex\tsite\n" + "".join(
        f"sub-{x}\t{20 + i}\tF\tA\n" for i, x in enumerate(["01", "02", "03", "04"])))
    config = {"inputs": {"source": "fmriprep", "derivatives": str(deriv), "participants": str(participants),
                         "runs": "all"},
              "dataset": {"n_folds": 2}, "train": {"models": ["dummy"]}}
    text = snakemake(make_workdir(tmp_path / "work", config), "-n", "-p", "--cores", "1").stdout
    command = next(line for line in text.splitlines() if "--participant-id sub-01" in line)
    bolds = command.split("--bold ")[1].split(" --mask")[0].split()
    confounds = command.split("--confounds ")[1].split(" --atlas")[0].split()
    assert [Path(b).name for b in bolds] == [f"sub-01_ses-1_task-rest_run-{r}_space-{SPACE}_desc-preproc_bold.nii.gz"
                                             for r in (1, 2)]
    assert [Path(c).name for c in confounds] == [f"sub-01_ses-1_task-rest_run-{r}_desc-confounds_timeseries.tsv"
                                                 for r in (1, 2)]
    single = next(line for line in text.splitlines() if "--participant-id sub-02" in line)
    assert len(single.split("--bold ")[1].split(" --mask")[0].split()) == 1


def test_dag_follows_models_and_folds(tmp_path):
    config = {"demo": {"n_subjects": 8}, "dataset": {"n_folds": 3}, "train": {"models": ["dummy", "cnn_rnn"]}}
    jobs = planned_jobs(snakemake(make_workdir(tmp_path, config), "-n", "--cores", "2"))
    assert jobs["extract_subject"] == 8
    assert jobs["train_model"] == 3 * 2


def test_pretraining_adds_one_encoder_job_per_fold_before_cnn_rnn(tmp_path):
    config = {"demo": {"n_subjects": 8}, "dataset": {"n_folds": 3}, "train": {"models": ["dummy", "cnn_rnn"]},
              "models": {"cnn_rnn": {"pretrain": True}}}
    out = snakemake(make_workdir(tmp_path, config), "-n", "--cores", "2", "-p")
    jobs = planned_jobs(out)
    assert jobs["pretrain_encoder"] == 3 and jobs["train_model"] == 3 * 2
    text = out.stdout + out.stderr
    # Only the cnn_rnn jobs start from the fold's encoder.
    assert text.count("--init-encoder results/models/pretrain/fold-") == 3


def test_processes_setting_launches_torch_models_through_torchrun(tmp_path):
    config = {"demo": {"n_subjects": 8}, "dataset": {"n_folds": 2}, "train": {"models": ["dummy", "roi_gru"],
                                                                               "processes": 2}}
    text = snakemake(make_workdir(tmp_path, config), "-n", "--cores", "2", "-p").stdout
    assert text.count("torchrun --standalone --nnodes 1 --nproc-per-node 2 -m brainage.train model --model roi_gru") == 2
    assert text.count("python -m brainage.train model --model dummy") == 2


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"extract": {"fd_threshold": "high"}}, r"fd_threshold"),
        ({"extract": {"bogus_key": 1}}, r"bogus_key"),
        ({"train": {"models": ["transformer-xl"]}}, r"transformer-xl"),
        ({"models": {"cnn_rnn": {"rnn": "mamba"}}}, r"mamba"),
        ({"inputs": {"source": "fmriprep"}}, r"derivatives|participants"),
        ({"dataset": {"n_folds": 1}}, r"n_folds|minimum"),
    ],
)
def test_malformed_config_names_the_key(tmp_path, config, message):
    result = snakemake(make_workdir(tmp_path, config), "-n", "--cores", "1", check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Error validating config file" in output, output[-3000:]
    assert re.search(message, output), output[-3000:]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"inputs": {"source": "indi"}}, r"inputs.source is 'indi' but the datasets list is empty"),
        ({"inputs": {"source": "indi"}, "datasets": [{"name": "abide_pcp"}, {"name": "abide_pcp"}]},
         r"each dataset may be listed once"),
        ({"inputs": {"source": "indi"}, "datasets": [{"name": "abide_pcp", "derivative": "rois_ho"}]},
         r"\['cnn_rnn'\], which read volumes, but dataset abide_pcp has ROI series only"),
        ({"inputs": {"source": "indi"}, "datasets": [{"name": "abide_pcp", "pipeline": "fsl"}]}, r"fsl"),
        ({"inputs": {"source": "indi"}, "datasets": [{"name": "hcp"}]}, r"hcp"),
    ],
)
def test_malformed_datasets_are_named_before_any_download(tmp_path, config, message):
    result = snakemake(make_workdir(tmp_path, config), "-n", "--cores", "1", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and re.search(message, output), output[-3000:]


def test_indi_dag_starts_with_the_download(tmp_path):
    """Before anything is downloaded only the fetch is known; nothing is contacted by a dry run."""
    config = {"inputs": {"source": "indi"}, "indi": {"endpoint_url": "http://127.0.0.1:9"},
              "datasets": [{"name": "abide_pcp"}], "train": {"models": ["dummy", "connectome_ridge"]}}
    jobs = planned_jobs(snakemake(make_workdir(tmp_path, config), "-n", "--cores", "1"))
    assert jobs["indi_fetch"] == 1 and "pcp_rois_subject" not in jobs and "atlas" not in jobs


# The parsed workflow's local rules (a dry run prints "rule" for local jobs too). In a subprocess:
# parsing sets PYTHONPATH and sys.path (rules/common.smk).
LOCAL_RULES = """
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings
with SnakemakeApi(OutputSettings()) as api:
    workflow = api.workflow(resource_settings=ResourceSettings(), snakefile=Path("Snakefile"), workdir=Path("."),
                            config_settings=ConfigSettings(configfiles=[Path("config/test.yaml")]))
    print(" ".join(sorted(workflow._workflow._localrules)))
"""


def test_downloads_are_local_rules(tmp_path):
    """Compute nodes often have no internet: the INDI download runs where the workflow is started."""
    config = {"inputs": {"source": "indi"}, "indi": {"endpoint_url": "http://127.0.0.1:9"},
              "datasets": [{"name": "abide_pcp"}], "train": {"models": ["dummy"]}}
    result = subprocess.run([sys.executable, "-c", LOCAL_RULES], cwd=make_workdir(tmp_path, config),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert {"indi_fetch", "atlas"} <= set(result.stdout.split()), result.stdout


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"train": {"models": ["dummy", "transformer"]}},
         r"train.models: unknown model 'transformer'; valid models: cnn_conn, cnn_rnn, connectome_ridge, dummy, roi_conn, roi_gru, stack"),
        ({"train": {"models": ["dummy", "ridge_x"]}, "variants": {"ridge_x": {"model": "svm"}}},
         r"On instance\['variants'\]\['ridge_x'\]\['model'\]:\s+'svm'"),
        ({"train": {"models": ["dummy", "connectome_ridge", "stack"]}, "models": {"stack": {"models": ["roi_gru"]}}},
         r"stack: models \['roi_gru'\] must be trained models of train.models other than the dummy and the stack"),
        ({"train": {"models": ["dummy", "stack"]}}, r"stack: models \[\] must be trained models"),
    ],
)
def test_unknown_models_variants_and_stack_bases_are_named(tmp_path, config, message):
    result = snakemake(make_workdir(tmp_path, {"demo": {"n_subjects": 8}, **config}), "-n", "--cores", "1", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and re.search(message, output), output[-3000:]


def test_variants_train_under_their_names_and_the_stack_reads_its_bases_predictions(tmp_path):
    config = {"demo": {"n_subjects": 8}, "dataset": {"n_folds": 2},
              "train": {"models": ["dummy", "connectome_ridge", "ridge_tangent", "stack"], "inner_folds": 3},
              "variants": {"ridge_tangent": {"model": "connectome_ridge", "kind": "tangent"}}}
    text = snakemake(make_workdir(tmp_path, config), "-n", "--cores", "1", "-p").stdout
    assert text.count("-m brainage.train model --model ridge_tangent") == 2
    assert '"kind": "tangent", "model": "connectome_ridge"' in text and "--inner-folds 3" in text
    stack = [line for line in text.splitlines() if "--model stack" in line]
    assert len(stack) == 2
    # The stack of fold 0 reads exactly its two bases' fold-0 predictions (the dummy is left out).
    fold0 = next(line for line in stack if "--fold 0" in line)
    inputs = fold0.split("--inputs ")[1].split(" --params")[0].split()
    assert inputs == ["results/models/model-connectome_ridge/fold-0/predictions.parquet",
                      "results/models/model-ridge_tangent/fold-0/predictions.parquet"]
    assert '"models": ["connectome_ridge", "ridge_tangent"]' in fold0
