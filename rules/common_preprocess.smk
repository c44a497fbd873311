"""fMRIPrep input functions and derivative names (rules/preprocess.smk): which run, which files, which command."""

import brainage.errors
import brainage.preprocess.checks
import brainage.preprocess.command

PREP = config["preprocess"]
TEMPLATEFLOW = PREP["engine"] != "docker"  # the docker image carries its own templates
# fMRIPrep 21+ names, below one derivatives root for every dataset (participant ids are unique).
# {funcdir} is "func" or "ses-<label>/func"; {entities} the run's entities, e.g.
# "ses-1_task-rest_acq-2_run-1" (fMRIPrep keeps every source entity).
PREP_STEM = "results/fmriprep/sub-{subject}/{funcdir}/sub-{subject}_{entities}"
# inputs.res null: the space is asked for without a resolution, and fMRIPrep writes no res-.
PREP_SPACE = f"{SPACE}_res-{RES}" if RES else SPACE
PREP_FILES = {
    "bold": f"{PREP_STEM}_space-{PREP_SPACE}_desc-preproc_bold.nii.gz",
    "bold_json": f"{PREP_STEM}_space-{PREP_SPACE}_desc-preproc_bold.json",
    "mask": f"{PREP_STEM}_space-{PREP_SPACE}_desc-brain_mask.nii.gz",
    "confounds": f"{PREP_STEM}_desc-confounds_timeseries.tsv",
    "confounds_json": f"{PREP_STEM}_desc-confounds_timeseries.json",
}


@functools.cache
def fmriprep_ready():
    """Licence, engine and image checked once, at DAG build, before any job is submitted."""
    try:
        return brainage.preprocess.checks.check_setup(PREP)
    except (brainage.errors.PreprocessError, ValueError) as err:
        raise WorkflowError(f"fMRIPrep cannot run: {err}") from None


# A local raw BIDS dataset: fMRIPrep's set-up is checked at DAG build, before any job is submitted
# (INDI datasets: once the download tells whether raw data are there, in indi_subjects).
if LOCAL_BIDS:
    fmriprep_ready()


@functools.cache
def bids_root(root, dataset):
    """A downloaded BIDS root, checked once: it must still exist and hold sub-* folders."""
    try:
        return brainage.preprocess.checks.check_bids_dir(root, f"dataset {dataset}")
    except brainage.errors.PreprocessError as err:
        raise WorkflowError(
            f"{err}; `snakemake indi_download --forcerun indi_fetch` fetches it again"
        ) from None


def chosen_run(label):
    """(BIDS root, funcdir, entities) of the BOLD run used for a subject: the first fetched one.

    One run per subject is preprocessed and analysed (sorted by session, task, acq, run).
    """
    if LOCAL_BIDS:
        run = RUNS[label][0]
        bids_root(DERIV, "inputs.bids_dir")
        return DERIV, run.funcdir, run.label
    dataset, rows = subject_files(label)
    bold = sorted(rows.loc[rows["kind"] == "bold", "path"])[0]
    root, rel = bold.split(f"/sub-{label}/", 1)
    bids_root(root, dataset)
    funcdir, filename = rel.rsplit("/", 1)
    entities = (
        filename.split(".")[0].removeprefix(f"sub-{label}_").removesuffix("_bold")
    )
    return root, funcdir, entities


def run_wildcards(label):
    """The wildcards of a subject's fmriprep_subject job."""
    _, funcdir, entities = chosen_run(label)
    return {"subject": label, "funcdir": funcdir, "entities": entities}


def preprocessed_files(label):
    """The fMRIPrep derivatives extraction reads for one subject (named before fMRIPrep runs)."""
    return {
        key: pattern.format(**run_wildcards(label))
        for key, pattern in PREP_FILES.items()
    }


def fmriprep_inputs(wildcards):
    """Every fetched file of the subject and the prefetched templates.

    The licence is checked, not an input: renewing it must not rerun every subject.
    """
    if LOCAL_BIDS:
        raw = brainage.participants.discover.raw_run_inputs(
            DERIV, RUNS[wildcards.subject][0]
        )
        inputs = {"raw": sorted(map(str, raw))}
    else:
        _, rows = subject_files(wildcards.subject)
        inputs = {"raw": sorted(rows["path"])}
    if TEMPLATEFLOW:
        inputs["templates"] = rules.templateflow_prefetch.output.table
    return inputs


def _job(wildcards):
    root, _, _ = chosen_run(wildcards.subject)
    return brainage.preprocess.command.SubjectJob(
        label=wildcards.subject,
        bids_dir=root,
        output_dir="results/fmriprep",
        work_dir=f"{PREP['work_dir']}/sub-{wildcards.subject}",
        license_file=str(fmriprep_ready()["license"]),
        templateflow_home=PREP["templateflow"]["home"] if TEMPLATEFLOW else None,
        output_space=f"{SPACE}:res-{RES}" if RES else SPACE,
    )


def fmriprep_command(wildcards):
    """The engine's fMRIPrep command for one subject (threads and memory are added by the rule)."""
    params = brainage.preprocess.command.FmriprepParams.from_dict(PREP)
    return brainage.preprocess.command.fmriprep_command(params, _job(wildcards))


def fmriprep_filter(wildcards):
    """The BIDS filter file's content: exactly the chosen run."""
    return json.dumps(
        brainage.preprocess.command.bids_filter(wildcards.entities), sort_keys=True
    )


def fmriprep_work(wildcards):
    return _job(wildcards).work_dir


def fmriprep_mem_mb(wildcards, attempt):
    """16 GB, 8 GB more on each retry (fMRIPrep's peak grows with the run's length and grid)."""
    return 16000 + 8000 * (attempt - 1)


def fmriprep_runtime(wildcards, attempt):
    """Minutes: 6 h, then 12 h, 18 h (without recon-all a subject takes 1-2 h on 8 cores)."""
    return 360 * attempt


def fmriprep_records(wildcards):
    """Every fMRIPrep job's record (what ran), for the report; none without raw BIDS datasets."""
    if LOCAL_BIDS:
        return [
            rules.fmriprep_subject.output.record.format(**run_wildcards(label))
            for label in SUBJECTS
        ]
    if not (INDI and RAW_DATASETS):
        return []
    return [
        rules.fmriprep_subject.output.record.format(**run_wildcards(label))
        for name, label in indi_subjects()
        if name in RAW_DATASETS
    ]
