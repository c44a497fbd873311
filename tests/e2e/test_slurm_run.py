"""The workflow through profiles/slurm on a real single-node Slurm: jobs submitted, a failure reported, a resumed run.

Slurm (munge, slurmctld, slurmd, slurmdbd + MariaDB for sacct) comes from Debian's packages through
../shared/tools/slurm_local.sh; the tests skip where that cannot run (not root, no script, no apt).
The GPU tests at the end read the resources of a dry run and need no Slurm.
"""

import json
import os
import re
import shutil
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import yaml

from brainage.demo.generate import generate_demo
from shared_paths import require_shared
from snakemake_helpers import make_workdir, planned_jobs, snakemake

pytestmark = pytest.mark.e2e

SLURM_LOCAL = Path(__file__).parents[3] / "shared/tools/slurm_local.sh"
DAEMONS = ["munged", "slurmctld", "slurmd", "slurmdbd", "mariadbd"]
N_SUBJECTS = 10
BAD_BOLD = "derivatives/sub-003/func/sub-003_task-rest_space-MNI152NLin2009cAsym_res-8_desc-preproc_bold.nii.gz"
# What each run submits: one Slurm job per rule and wildcards, the extraction in one batch (group).
RESUMED_JOBS = {"rule_participants_manifest": 1, "rule_dataset_build": 1, "rule_train_model": 4,
                "rule_evaluate": 1, "rule_report": 1, "rule_export_derivatives": 1}
SUBMITTED = re.compile(r"has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")


def _sh(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SLURM_LOCAL), *args], capture_output=True, text=True, timeout=timeout)


def _slurm_is_up() -> bool:
    """A Slurm with accounting answers already (e.g. started by .ci/run): use it, leave it running."""
    try:
        ok = [subprocess.run(cmd, capture_output=True, timeout=20).returncode == 0
              for cmd in (["sinfo", "-h"], ["sacct", "-n", "-X"])]
    except (OSError, subprocess.TimeoutExpired):
        return False
    return all(ok)


@pytest.fixture(scope="session")
def slurm():
    """A running single-node Slurm with accounting: (account, partition, time it was started).

    Session-scoped: daemons started here run until the test session (or xdist worker) ends.
    Once Slurm is installed, every Snakemake start runs the Slurm executor plugin's
    ``scontrol show config`` probe (Snakemake imports all executor plugins), which waits about
    9 s when no controller answers: stopping the daemons after this module would make each
    later dry run in the session pay that.
    """
    if os.geteuid() != 0:
        pytest.skip("a local Slurm needs root (slurm_local.sh installs Debian packages and starts the daemons)")
    require_shared(SLURM_LOCAL, "the recipe to start a local Slurm (slurm_local.sh)")
    started = datetime.now() - timedelta(minutes=1)
    ours = not _slurm_is_up()
    if ours and not all(Path("/usr/sbin", name).exists() for name in DAEMONS):
        if shutil.which("apt-get") is None:
            pytest.skip("no apt-get: cannot install Slurm from Debian's packages")
        result = _sh("install", "--with-dbd")
        if result.returncode != 0:
            pytest.skip(f"installing Slurm failed ({result.returncode}): {result.stderr[-1500:]}")
    try:
        if ours:
            result = _sh("start", "--with-dbd", timeout=120)
            assert result.returncode == 0, f"slurm_local.sh start failed:\n{result.stdout}\n{result.stderr}"
        account = subprocess.run(["sacctmgr", "-n", "-P", "show", "assoc", "user=root", "format=account"],
                                 capture_output=True, text=True, check=True).stdout.split()[0]
        partition = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True,
                                   check=True).stdout.split()[0].rstrip("*")
        yield account, partition, started
    finally:
        if ours:
            _sh("stop", timeout=60)


def _sacct(run_id: str, since: datetime) -> dict[str, dict]:
    """The Slurm jobs of one Snakemake run (sacct names them by its run ID): {jobid: {State, AllocCPUS}}."""
    out = subprocess.run(
        ["sacct", "-a", "-X", "-n", "-P", "-S", since.strftime("%Y-%m-%dT%H:%M:%S"), "--name", run_id,
         "--format=JobID,State,AllocCPUS"], capture_output=True, text=True, check=True).stdout
    rows = [line.split("|") for line in out.splitlines() if line]
    return {jobid: {"State": state, "AllocCPUS": int(cpus)} for jobid, state, cpus in rows}


def _submitted(result: subprocess.CompletedProcess) -> dict[str, str]:
    """{Slurm job id: its log folder under .snakemake/slurm_logs (rule_<rule> or group_<group>_<rules>)}."""
    return {jobid: log.split("/slurm_logs/")[1].split("/")[0]
            for jobid, log in SUBMITTED.findall(result.stdout + result.stderr)}


def _run_id(result: subprocess.CompletedProcess) -> str:
    match = re.search(r"SLURM run ID: (\S+)", result.stdout + result.stderr)
    assert match, result.stdout + result.stderr
    return match.group(1)


def _counts(folders) -> dict[str, int]:
    counts: dict[str, int] = {}
    for folder in folders:
        counts[folder] = counts.get(folder, 0) + 1
    return counts


def _profile_copy(workdir: Path, account: str, partition: str) -> None:
    """profiles/slurm with the account and partition filled in, sized for this small node and polled often."""
    path = workdir / "profiles" / "slurm" / "config.yaml"
    profile = yaml.safe_load(path.read_text())
    assert profile["default-resources"]["slurm_account"] == "CHANGE_ME"  # the user must set both
    assert profile["default-resources"]["slurm_partition"] == "CHANGE_ME"
    profile["default-resources"].update(slurm_account=account, slurm_partition=partition)
    profile["resources"]["subject_slots"] = min(2, os.cpu_count() or 1)  # the node's CPUs
    profile["slurm-init-seconds-before-status-checks"] = 1  # jobs take seconds here, not hours
    path.write_text(yaml.safe_dump(profile))


def _slurm_run(workdir: Path) -> subprocess.CompletedProcess:
    # --retries 0: a retried failure would be resubmitted twice (the profile's retries: 2) and cost a
    # minute; --verbose shows every sbatch call.
    return snakemake(workdir, "--workflow-profile", "profiles/slurm", "--retries", "0", "--verbose",
                     check=False, timeout=400)


@pytest.fixture(scope="module")
def study(slurm, tmp_path_factory):
    """fMRIPrep-format derivatives of 10 subjects with two user errors: a BOLD copied half-way
    (sub-003) and an age column named "Age" in participants.tsv."""
    src = tmp_path_factory.mktemp("study")
    generate_demo(src, {"n_subjects": N_SUBJECTS, "sites": ["siteA", "siteB"], "n_timepoints": 80, "tr": 2.0,
                        "voxel_size": 8, "age_min": 8.0, "age_max": 80.0}, seed=7)
    bold = src / BAD_BOLD
    bold.write_bytes(bold.read_bytes()[: bold.stat().st_size // 2])
    table = pd.read_csv(src / "participants.tsv", sep="\t", dtype=str)
    table.rename(columns={"age": "Age"}).to_csv(src / "participants.tsv", sep="\t", index=False)
    config = {
        "inputs": {"source": "fmriprep", "derivatives": str(src / "derivatives"),
                   "participants": str(src / "participants.tsv"), "dataset": "study", "res": "8"},
        "atlases": [{"name": "kmeans", "n_regions": 20}],
        "extract": {"volume_voxel_size": 16},
        "dataset": {"n_folds": 2},
        "train": {"models": ["dummy", "connectome_ridge"]},
    }
    workdir = make_workdir(tmp_path_factory.mktemp("work"), config)
    account, partition, _ = slurm
    _profile_copy(workdir, account, partition)
    return src, workdir


@pytest.fixture(scope="module")
def failed_run(slurm, study):
    """The first run (participants.tsv is wrong), and what it left behind."""
    src, workdir = study
    result = _slurm_run(workdir)
    logs = {path.relative_to(workdir).as_posix(): path.read_text()
            for path in (workdir / ".snakemake" / "slurm_logs").rglob("*.log")}
    qc = {path.parent.name: json.loads(path.read_text()) for path in (workdir / "results/extract").glob("*/*_qc.json")}
    rule_log = (workdir / "logs/participants_manifest.log").read_text()
    return result, _sacct(_run_id(result), slurm[2]), logs, qc, rule_log


@pytest.fixture(scope="module")
def resumed_run(slurm, study, failed_run):
    """The same command again after the user fixed the column name."""
    src, workdir = study
    table = pd.read_csv(src / "participants.tsv", sep="\t", dtype=str)
    table.rename(columns={"Age": "age"}).to_csv(src / "participants.tsv", sep="\t", index=False)
    result = _slurm_run(workdir)
    return result, _sacct(_run_id(result), slurm[2])


def test_every_rule_runs_as_a_slurm_job_and_extraction_is_batched(study, failed_run, resumed_run):
    _, workdir = study
    first, first_jobs = failed_run[:2]
    second, second_jobs = resumed_run
    assert second.returncode == 0, second.stdout + second.stderr
    assert (workdir / "results/report.html").is_file()
    submitted = _submitted(first) | _submitted(second)
    # Every job Snakemake reported as submitted is a real Slurm job, and each ran.
    assert set(submitted) == set(first_jobs) | set(second_jobs)
    states = {jobid: info["State"] for jobid, info in (first_jobs | second_jobs).items()}
    assert sorted(states.values()) == ["COMPLETED"] * (len(states) - 1) + ["FAILED"], states
    # Every rule but the target and the local rule (atlas: fetched where Snakemake runs) went to Slurm.
    planned = planned_jobs(first)
    assert "localrule atlas:" in first.stderr + first.stdout
    folders = set(submitted.values())
    assert {f.removeprefix("rule_") for f in folders if f.startswith("rule_")} == set(planned) - {
        "all", "atlas", "extract_subject"}
    # Ten extractions in one Slurm job, running two at a time (subject_slots) on 2 CPUs, not ten.
    batches = [jobid for jobid, folder in submitted.items() if folder == "group_extract_extract_subject"]
    assert planned["extract_subject"] == N_SUBJECTS and len(batches) == 1
    assert first_jobs[batches[0]] == {"State": "COMPLETED", "AllocCPUS": min(2, os.cpu_count() or 1)}


def test_failed_job_is_reported_with_its_slurm_log(study, failed_run):
    src, workdir = study
    result, jobs, logs, _, rule_log = failed_run
    text = result.stdout + result.stderr
    assert result.returncode == 1
    failed = [jobid for jobid, info in jobs.items() if info["State"] == "FAILED"]
    assert len(failed) == 1
    slurm_log = f".snakemake/slurm_logs/rule_participants_manifest/{failed[0]}.log"
    assert f"SLURM-job '{failed[0]}' failed" in text
    block = re.search(r"Error in rule participants_manifest:\n(?:    .*\n)*?    log: (.*)\n", text)
    assert block, text
    assert block.group(1).startswith(f"logs/participants_manifest.log, {workdir / slurm_log}")
    # The Slurm log holds the job's own Snakemake error; the rule's log names the file and the fix.
    assert "Error in rule participants_manifest" in logs[slurm_log]
    assert "logs/participants_manifest.log" in logs[slurm_log]
    assert f"{src / 'participants.tsv'}: participants table lacks columns ['age']" in rule_log
    assert "found ['participant_id', 'Age', 'sex', 'site']" in rule_log


def test_keep_going_finishes_every_extraction_and_bad_data_fails_no_job(study, failed_run):
    src, _ = study
    qc = failed_run[3]
    assert sorted(qc) == [f"sub-{i:03d}" for i in range(1, N_SUBJECTS + 1)]
    # The half-copied BOLD excludes its subject, named with the file; it does not fail the batch.
    assert qc["sub-003"]["status"] == "excluded"
    assert qc["sub-003"]["reason"].startswith(f"{src / BAD_BOLD}: truncated or corrupt gzip data")
    assert all(record["status"] != "excluded" for name, record in qc.items() if name != "sub-003")


def test_rerun_submits_only_the_unfinished_jobs(study, resumed_run):
    _, workdir = study
    result, jobs = resumed_run
    assert _counts(_submitted(result).values()) == RESUMED_JOBS
    assert planned_jobs(result) == {"all": 1, **{k.removeprefix("rule_"): n for k, n in RESUMED_JOBS.items()}}
    assert [info["State"] for info in jobs.values()] == ["COMPLETED"] * sum(RESUMED_JOBS.values())
    exclusions = pd.read_csv(workdir / "results/dataset/exclusions.tsv", sep="\t")
    assert exclusions["participant_id"].tolist() == ["sub-003"]
    assert planned_jobs(snakemake(workdir, "-n")) == {}


def _sbatch_calls(result: subprocess.CompletedProcess) -> dict[str, str]:
    """{the job's --comment (rule and wildcards): its sbatch call} from a --verbose run."""
    calls = re.findall(r"sbatch call: (sbatch .*)", result.stdout + result.stderr)
    return {re.search(r"--comment (\S+)", call).group(1): call for call in calls}


def test_only_torch_training_asks_slurm_for_gpus(study, resumed_run):
    """Baselines are submitted without any GPU request; a torch model's job asks for --gpus=1 (which
    this GPU-less Slurm refuses at submission, so nothing is trained)."""
    _, workdir = study
    baselines = {c: call for c, call in _sbatch_calls(resumed_run[0]).items() if c.startswith("rule_train_model")}
    assert len(baselines) == 4
    assert not [c for c, call in baselines.items() if "--gpus" in call or "--gres" in call]
    config = workdir / "config" / "test.yaml"
    original = config.read_text()
    config.write_text(yaml.safe_dump(yaml.safe_load(original) | {"train": {"models": ["dummy", "roi_gru"]}}))
    try:
        result = _slurm_run(workdir)
    finally:
        config.write_text(original)
    calls = _sbatch_calls(result)
    assert sorted(calls) == ["rule_train_model_wildcards_roi_gru_0", "rule_train_model_wildcards_roi_gru_1"]
    assert all(" --gpus=1" in call.split(" --wrap=")[0] for call in calls.values()), calls
    assert "Invalid generic resource (gres) specification" in result.stdout + result.stderr


def _gpu_requests(result: subprocess.CompletedProcess) -> dict[str, int | None]:
    """{rule and wildcards: the job's gpu resource (None: none)} from a dry run's job list."""
    jobs = re.findall(r"rule (train_model|pretrain_encoder):\n(?:    .*\n)*?    wildcards: (.*)\n"
                      r"(?:    .*\n)*?    resources: (.*)\n", result.stdout + result.stderr)
    found = {}
    for rule, wildcards, resources in jobs:
        gpu = re.search(r"\bgpu=(\d+)", resources)
        found[f"{rule} {wildcards}"] = int(gpu.group(1)) if gpu else None
    return found


def test_dry_run_gpus_follow_the_model_and_processes(tmp_path):
    config = {"demo": {"n_subjects": 8}, "dataset": {"n_folds": 2},
              "train": {"models": ["dummy", "connectome_ridge", "roi_gru", "cnn_rnn"], "processes": 2},
              "models": {"cnn_rnn": {"pretrain": True}}}
    found = _gpu_requests(snakemake(make_workdir(tmp_path, config), "-n", "--cores", "2"))
    expected = {}
    for fold in (0, 1):
        expected[f"pretrain_encoder fold={fold}"] = 1  # one process: python, not torchrun
        for model, gpus in (("dummy", None), ("connectome_ridge", None), ("roi_gru", 2), ("cnn_rnn", 2)):
            expected[f"train_model model={model}, fold={fold}"] = gpus
    assert found == expected


def test_dry_run_gpus_per_process_zero_asks_for_none(tmp_path):
    config = {"demo": {"n_subjects": 8}, "dataset": {"n_folds": 2},
              "train": {"models": ["dummy", "roi_gru", "cnn_rnn"], "gpus_per_process": 0},
              "models": {"cnn_rnn": {"pretrain": True}}}
    found = _gpu_requests(snakemake(make_workdir(tmp_path, config), "-n", "--cores", "2"))
    assert len(found) == 2 * 3 + 2
    assert set(found.values()) == {None}
