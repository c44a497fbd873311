"""Raw BIDS from an S3 server on loopback through fMRIPrep (recording stand-ins for the engines) to the report."""

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from fmriprep_standins import install
from indi_layouts import write_raw_bids
from s3_testing import moto_server, put_object, upload_tree

from snakemake_helpers import make_workdir, planned_jobs, snakemake

pytestmark = pytest.mark.e2e

N_SUBJECTS = 8
LABEL = "0010002"  # an NYU subject of write_raw_bids("adhd200")
MOVER = "1018963"  # a KKI subject planted with high motion in the full run
RAW_ROOT = "resources/indi/adhd200/NYU"
STEM = f"sub-{LABEL}/ses-1/func/sub-{LABEL}_ses-1_task-rest_run-1"
RECORD = f"results/preprocess/{STEM}_fmriprep.json"
TEMPLATES = {
    "tpl-MNI152NLin2009cAsym": ["template_description.json", "tpl-MNI152NLin2009cAsym_res-01_T1w.nii.gz",
                                "tpl-MNI152NLin2009cAsym_res-02_desc-brain_mask.nii.gz",
                                "tpl-MNI152NLin2009cAsym_res-08_T1w.nii.gz"],
    "tpl-OASIS30ANTs": ["template_description.json", "tpl-OASIS30ANTs_res-01_T1w.nii.gz"],
    "tpl-fsaverage": ["tpl-fsaverage_den-164k_hemi-L_sphere.surf.gii"],
}


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    """fcp-indi with 8 ADHD-200 subjects (60-frame runs) and a small templateflow bucket."""
    root = tmp_path_factory.mktemp("fcp-indi")
    write_raw_bids(root, "adhd200", n_subjects=N_SUBJECTS, seed=1, n_frames=60)
    with moto_server() as url:
        upload_tree(url, root)
        for folder, names in TEMPLATES.items():
            for name in names:
                put_object(url, f"{folder}/{name}", f"{folder}/{name}".encode(), bucket="templateflow")
        yield url


@pytest.fixture()
def license_file(tmp_path):
    path = tmp_path / "freesurfer" / "license.txt"
    path.parent.mkdir()
    path.write_text("user@example.org\n12345\n *CxYz12345\n FSabcdefgh\n")
    return path


def _config(url, license_path, **preprocess):
    return {
        "inputs": {"source": "indi", "res": "8"},
        "datasets": [{"name": "adhd200"}],
        "indi": {"endpoint_url": url, "retries": 3, "backoff_s": 0.05, "timeout_s": 10},
        "preprocess": {"fs_license": str(license_path) if license_path else None,
                       "templateflow": {"endpoint_url": url, "templates": ["OASIS30ANTs"], "resolutions": [1]},
                       **preprocess},
        "atlases": [{"name": "kmeans", "n_regions": 20}],
        "extract": {"min_frames": 20, "min_seconds": 30},
        "dataset": {"n_folds": 2},
        "train": {"models": ["dummy", "connectome_ridge"]},
        # Stricter than the default 0.55 mm, so that a subject planted at 0.4 mm (most of its frames
        # below the 0.5 mm censoring threshold) is excluded by the QC, not by censoring.
        "qc": {"max_mean_fd": 0.3},
    }


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "FS_LICENSE"}
    return env | extra


def _calls(record: Path, tool: str) -> list[dict]:
    return [c for c in map(json.loads, record.read_text().splitlines()) if c["tool"] == tool]


def _run(tmp_path, url, license_path, *targets, mode="derivatives", env=None, check=True, **preprocess):
    record = tmp_path / "calls.jsonl"
    bin_dir = install(tmp_path / "bin", record, mode=mode)
    work = tmp_path / "run"
    if not work.exists():
        make_workdir(work, _config(url, license_path, **preprocess))
    result = snakemake(work, "--cores", "2", *targets, env=env or _env(), path_first=bin_dir, check=check)
    return work, record, result


def test_missing_license_stops_before_anything_is_submitted(tmp_path, endpoint):
    work, _, result = _run(tmp_path, endpoint, None, check=False)
    text = result.stdout + result.stderr
    assert result.returncode != 0
    assert ("fMRIPrep cannot run: fMRIPrep needs a FreeSurfer license file, and none is set "
            "(preprocess.fs_license is null and FS_LICENSE is not set)") in text
    assert "https://surfer.nmr.mgh.harvard.edu/registration.html" in text
    assert not (work / "resources" / "indi").exists()  # not even the download started
    print("\nWHAT A USER SEES WITHOUT A LICENSE:\n" + "\n".join(
        line for line in text.splitlines() if "license" in line.lower()))


def test_docker_command_is_the_one_fmriprep_docker_builds(tmp_path, endpoint, license_file):
    work, record, _ = _run(tmp_path, endpoint, license_file, RECORD)
    (run,) = [c["argv"] for c in _calls(record, "docker") if c["argv"][0] == "run" and "/data" in c["argv"]]
    print("\nDOCKER (argv as fmriprep-docker runs it):\n" + " ".join(run))
    mounts = [run[i + 1] for i, word in enumerate(run) if word == "-v"]
    assert mounts == [f"{license_file}:/opt/freesurfer/license.txt:ro", f"{work / RAW_ROOT}:/data:ro",
                      f"{work}/results/fmriprep:/out", f"{work}/work/fmriprep/sub-{LABEL}:/scratch",
                      f"{work}/work/fmriprep/sub-{LABEL}/bids_filter.json:/tmp/bids_filter.json"]
    assert "-it" not in run and "-i" not in run  # --no-tty: no terminal under Snakemake or Slurm
    after = run[run.index("nipreps/fmriprep:25.2.7") + 1:]
    assert after[:5] == ["/data", "/out", "participant", "--participant-label", LABEL]
    for flag, value in [("--nthreads", "2"), ("--omp-nthreads", "2"), ("--mem-mb", "14400"),
                        ("--output-spaces", "MNI152NLin2009cAsym:res-8"), ("-w", "/scratch"),
                        ("--bids-filter-file", "/tmp/bids_filter.json")]:
        assert after[after.index(flag) + 1] == value
    assert {"--fs-no-reconall", "--notrack", "--skip-bids-validation"} <= set(after)
    assert json.loads((work / f"work/fmriprep/sub-{LABEL}/bids_filter.json").read_text()) == {
        "bold": {"datatype": "func", "suffix": "bold", "session": "1", "task": "rest", "run": 1}}
    done = json.loads((work / RECORD).read_text())
    assert done["fmriprep_version"] == "25.2.7" and done["engine"] == "docker"
    assert not (work / "resources" / "templateflow").exists()  # the image carries its templates


@pytest.mark.parametrize("engine", ["apptainer", "native"])
def test_apptainer_and_native_commands_bind_the_prefetched_templates(tmp_path, endpoint, license_file, engine):
    image = tmp_path / "fmriprep-25.2.7.sif"
    image.write_bytes(b"SIF")
    work, record, _ = _run(tmp_path, endpoint, license_file, RECORD, engine=engine, image=str(image))
    (call,) = _calls(record, "apptainer" if engine == "apptainer" else "fmriprep")
    run = call["argv"]
    print(f"\n{engine.upper()} (argv as executed):\n" + " ".join(run))
    home = work / "resources" / "templateflow"
    fetched = sorted(p.relative_to(home).as_posix() for p in home.rglob("*.*") if p.name != "brainage_templates.tsv")
    assert fetched == ["tpl-MNI152NLin2009cAsym/template_description.json",
                       "tpl-MNI152NLin2009cAsym/tpl-MNI152NLin2009cAsym_res-01_T1w.nii.gz",
                       "tpl-MNI152NLin2009cAsym/tpl-MNI152NLin2009cAsym_res-08_T1w.nii.gz",
                       "tpl-OASIS30ANTs/template_description.json",
                       "tpl-OASIS30ANTs/tpl-OASIS30ANTs_res-01_T1w.nii.gz"]
    if engine == "native":
        assert call["env"]["TEMPLATEFLOW_HOME"] == str(home)
        assert run[0:3] == [RAW_ROOT, "results/fmriprep", "participant"]
        return
    assert run[0:4] == ["run", "--cleanenv", "--env", "TEMPLATEFLOW_HOME=/templateflow"]
    binds = [run[i + 1] for i, word in enumerate(run) if word == "-B"]
    assert binds == [f"{work / RAW_ROOT}:/data:ro", f"{work}/results/fmriprep:/out",
                     f"{work}/work/fmriprep/sub-{LABEL}:/work",
                     f"{license_file}:/opt/freesurfer/license.txt:ro", f"{home}:/templateflow:ro"]
    after = run[run.index(str(image)) + 1:]
    assert after[:3] == ["/data", "/out", "participant"]
    assert after[after.index("--bids-filter-file") + 1] == "/work/bids_filter.json"


@pytest.mark.parametrize("mode", ["nothing", "crash"])
def test_a_job_without_derivatives_fails_with_fmriprep_evidence(tmp_path, endpoint, license_file, mode):
    work, _, result = _run(tmp_path, endpoint, license_file, RECORD, mode=mode, check=False, engine="native")
    text = result.stdout + result.stderr
    print(f"\nWHAT A USER SEES ({mode}):\n" + "\n".join(
        line for line in text.splitlines() if "fMRIPrep" in line or line.startswith(("  ", "Missing", "Last", "Crash", "No crash", "The working"))))
    assert result.returncode != 0
    head = (f"fMRIPrep failed for sub-{LABEL} (exit code 1)." if mode == "crash" else
            f"fMRIPrep finished for sub-{LABEL} (exit code 0) but left no usable derivatives.")
    assert head in text
    assert f"results/fmriprep/{STEM}_space-MNI152NLin2009cAsym_res-8_desc-preproc_bold.nii.gz" in text
    assert f"Last " in text and "fMRIPrep's log logs/fmriprep/" in text
    if mode == "crash":
        assert f"results/fmriprep/sub-{LABEL}/log/" in text and "crash-" in text
    log = work / "logs" / "fmriprep" / f"{STEM}.log"
    assert head in log.read_text()  # the message is also kept in the job's log
    assert not (work / RECORD).exists()
    # Fixed (here: fMRIPrep now succeeds), the same command resumes and finishes.
    _run(tmp_path, endpoint, license_file, RECORD, engine="native")
    assert (work / RECORD).exists()


def test_raw_bids_through_fmriprep_to_the_report(tmp_path, endpoint, license_file):
    env = _env(STANDIN_MEAN_FD=json.dumps({MOVER: 0.4}))
    dry = _run(tmp_path, endpoint, license_file, "-n", env=env, engine="native")[2]
    assert planned_jobs(dry)["indi_fetch"] == 1  # the rest is known once the download ran
    work, record, _ = _run(tmp_path, endpoint, license_file, env=env, engine="native")
    assert len(_calls(record, "fmriprep")) == N_SUBJECTS
    exclusions = pd.read_csv(work / "results/dataset/exclusions.tsv", sep="\t", dtype=str)
    moved = exclusions[exclusions.participant_id == f"sub-{MOVER}"]
    assert moved.stage.tolist() == ["qc"] and "> qc.max_mean_fd 0.3 mm" in moved.reason.iloc[0]
    cohort = pd.read_parquet(work / "results/dataset/cohort.parquet")
    assert len(cohort) == N_SUBJECTS - 1
    report = (work / "results/report.html").read_text()
    assert "preprocessed with fMRIPrep" in report and "jobs recorded 25.2.7 for 8 subjects" in report
    assert f"sub-{MOVER}" in report
    # Reruns: a QC threshold reruns no fMRIPrep and no extraction; an fMRIPrep argument reruns fMRIPrep.
    assert planned_jobs(snakemake(work, "-n", "--cores", "2", env=env, path_first=tmp_path / "bin")) == {}
    config = work / "config" / "test.yaml"
    text = config.read_text()
    config.write_text(text.replace("max_mean_fd: 0.3", "max_mean_fd: 1.0"))
    jobs = planned_jobs(snakemake(work, "-n", "--cores", "2", env=env, path_first=tmp_path / "bin"))
    assert "fmriprep_subject" not in jobs and "extract_subject" not in jobs and jobs["dataset_build"] == 1
    config.write_text(text.replace("engine: native", "engine: native\n  extra_args: ['--dummy-scans', '4']"))
    jobs = planned_jobs(snakemake(work, "-n", "--cores", "2", env=env, path_first=tmp_path / "bin"))
    assert jobs["fmriprep_subject"] == N_SUBJECTS
    # Leaving a subject out by name (e.g. fMRIPrep keeps failing for it) redoes no other subject's work.
    config.write_text(text.replace("- name: adhd200", f"- name: adhd200\n  exclude: {{sub-{LABEL}: T1w artefact}}"))
    jobs = planned_jobs(snakemake(work, "-n", "--cores", "2", env=env, path_first=tmp_path / "bin"))
    assert jobs["indi_fetch"] == 1 and "fmriprep_subject" not in jobs and "extract_subject" not in jobs
    snakemake(work, "--cores", "2", env=env, path_first=tmp_path / "bin")
    exclusions = pd.read_csv(work / "results/dataset/exclusions.tsv", sep="\t", dtype=str)
    assert exclusions.set_index("participant_id").loc[f"sub-{LABEL}", "reason"] == (
        "excluded in the config (datasets[adhd200].exclude): T1w artefact")


def test_memory_is_raised_on_retry(tmp_path, endpoint, license_file):
    """A job killed for memory is retried with more: 16 GB then 24 GB (fMRIPrep gets 90% of it)."""
    env = _env(STANDIN_MIN_MEM_MB="20000")
    work, record, _ = _run(tmp_path, endpoint, license_file, RECORD, "--retries", "1", env=env, engine="native")
    given = [c["argv"][c["argv"].index("--mem-mb") + 1] for c in _calls(record, "fmriprep")]
    assert given == ["14400", "21600"]
    assert (work / RECORD).exists()
