"""Config validation, the subject list, input functions, target lists and rerun triggers."""

import dataclasses
import functools
import hashlib
import json
import os
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# Jobs run the code that is hashed (code_hash): this repository's workflow/ tree, not whatever
# brainage is installed. First on sys.path here, and on PYTHONPATH for every job: local shells
# inherit it, and cluster jobs parse this file again. (Set with update(): an envvars directive
# would demand that the user define it.)
SOURCE_ROOT = str(Path(workflow.basedir, "workflow").resolve())
sys.path[:] = [SOURCE_ROOT, *(p for p in sys.path if p != SOURCE_ROOT)]
_PYTHONPATH = os.environ.get("PYTHONPATH", "").split(os.pathsep)
os.environ.update(
    PYTHONPATH=os.pathsep.join(
        [SOURCE_ROOT, *(p for p in _PYTHONPATH if p and p != SOURCE_ROOT)]
    )
)

import brainage._codehash
import brainage.demo
import brainage.download.atlas
import brainage.download.indi
import brainage.models
import brainage.participants
import brainage.participants.discover
import brainage.storage

# Defaults from the schema are filled in; an unknown or malformed key stops here, named.
validate(config, "../config/config.schema.yaml")

DEMO = config["inputs"]["source"] == "demo"
INDI = config["inputs"]["source"] == "indi"
# A local raw BIDS dataset, preprocessed here by fMRIPrep (rules/preprocess.smk).
LOCAL_BIDS = config["inputs"]["source"] == "bids"
TASK = config["inputs"]["task"]
SPACE = config["inputs"]["space"]
RES = brainage.demo.bold_res(config)
DERIV = (
    "resources/demo/derivatives"
    if DEMO
    else config["inputs"]["bids_dir"] if LOCAL_BIDS else config["inputs"]["derivatives"]
)
PARTICIPANTS = (
    "resources/demo/participants.tsv"
    if DEMO
    else config["inputs"]["participants"] or f"{DERIV}/participants.tsv"
)
MODELS = config["train"]["models"]
FOLDS = list(range(config["dataset"]["n_folds"]))


def _resolve_models():
    """Each name of train.models -> (registered model, full parameters); variants resolved, and
    the stack's base models filled in (default: every other model but the dummy) and checked.
    """
    resolved = {}
    for name in MODELS:
        try:
            resolved[name] = brainage.models.resolve(
                name, config["models"], config["variants"]
            )
        except ValueError as err:
            raise WorkflowError(f"train.models: {err}") from None
    registered = {m: base for m, (base, _) in resolved.items()}
    others = [m for m, base in registered.items() if base not in ("dummy", "stack")]
    for name, (base, params) in resolved.items():
        if base != "stack":
            continue
        bases = brainage.models.stack_bases(params, registered)
        wrong = [m for m in bases if m not in others]
        if wrong or not bases:
            raise WorkflowError(
                f"{name}: models {wrong or bases} must be trained models of train.models other "
                f"than the dummy and the stack (listed: {others})"
            )
        params["models"] = list(bases)
    return resolved


RESOLVED = _resolve_models()


def base_model(name):
    """The registered model behind a name of train.models (itself, or a variant's ``model``)."""
    return RESOLVED[name][0]


def _atlases():
    """The atlases by id, in config order (the first feeds the ROI models), each spec completed."""
    specs = [brainage.download.atlas.validate_spec(spec) for spec in config["atlases"]]
    ids = [spec["id"] for spec in specs]
    if len(set(ids)) < len(ids):
        raise WorkflowError(
            f"atlases: each atlas id may appear once, got {ids}; set `id:` to tell two apart"
        )
    return dict(zip(ids, specs))


ATLASES = _atlases()
PRIMARY_ATLAS = next(iter(ATLASES))

# The runs to use (inputs: task, space, res, session, runs, bids_filter): found in the
# derivatives by brainage.participants.discover, which parses fMRIPrep's names with pybids.
SELECTION = brainage.participants.discover.Selection.from_config(config["inputs"], RES)
# The demo's files are written by a job, so they are named here before they exist (the names
# fMRIPrep gives; their companions are named from the BOLD as discovery names them).
DEMO_BOLD = (
    "resources/demo/derivatives/sub-{subject}/func/sub-{subject}_task-"
    f"{TASK}_space-{SPACE}_res-{RES}_desc-preproc_bold.nii.gz"
)


def _datasets():
    """The ``datasets`` entries by name, checked for what the schema cannot express."""
    entries = config["datasets"] if INDI else []
    if INDI and not entries:
        raise WorkflowError("inputs.source is 'indi' but the datasets list is empty")
    names = [entry["name"] for entry in entries]
    if len(set(names)) < len(names):
        raise WorkflowError(f"datasets: each dataset may be listed once, got {names}")
    series_only = [
        e["name"] for e in entries if brainage.download.indi.is_pcp_series(e)
    ]
    volume_models = [
        m for m in MODELS if brainage.models.input_kind(base_model(m)) == "volumes"
    ]
    if series_only and volume_models:
        raise WorkflowError(
            f"train.models lists {volume_models}, which read volumes, but dataset {series_only[0]} "
            "has ROI series only (derivative rois_*); use derivative func_preproc or remove those models"
        )
    return {entry["name"]: entry for entry in entries}


DATASETS = _datasets()
# Raw BIDS datasets go through fMRIPrep (rules/preprocess.smk); derivative inputs bypass it.
RAW_DATASETS = [
    name for name, e in DATASETS.items() if brainage.download.indi.is_raw_bids(e)
]


def _subjects():
    """Subjects to extract and each one's run files: the demo's, or those of participants.tsv
    whose runs discovery finds with every file present and the subject's own.

    Subjects without a usable run are not dropped silently: the participants stage runs the same
    rule (brainage.participants.subject_files) and records each, naming the file or pattern.
    INDI subjects are known only after the download (``indi_subjects``).
    """
    if INDI:
        return {}
    if DEMO:
        return {
            s: [
                brainage.participants.discover.Run(
                    Path(DEMO_BOLD.format(subject=s)), ()
                )
            ]
            for s in brainage.demo.subject_ids(config["demo"]["n_subjects"])
        }
    ids = brainage.participants.read_participant_ids(PARTICIPANTS)
    excluded = {pid.removeprefix("sub-") for pid in config["inputs"]["exclude"]}
    find = (
        brainage.participants.raw_subject_files
        if LOCAL_BIDS
        else brainage.participants.subject_files
    )
    runs, _ = find([s for s in ids if s not in excluded], DERIV, SELECTION)
    return runs


RUNS = _subjects()


def selection_json():
    """The run selection as the participants stage reads it (--selection)."""
    return json.dumps(dataclasses.asdict(SELECTION), sort_keys=True)


def runs_digest():
    """A digest of every subject's run files: which runs were found, not their content."""
    listing = {s: [str(run.bold) for run in runs] for s, runs in RUNS.items()}
    return hashlib.sha256(json.dumps(listing, sort_keys=True).encode()).hexdigest()[:16]


SUBJECTS = list(RUNS)


wildcard_constraints:
    subject="[A-Za-z0-9]+",
    atlas="|".join(ATLASES),
    model="|".join(MODELS),
    fold=r"\d+",


def config_json(*sections):
    """The config sub-tree(s) as canonical JSON: a parameter change reruns the rule."""
    if len(sections) == 1:
        return json.dumps(config[sections[0]], sort_keys=True)
    return json.dumps({s: config[s] for s in sections}, sort_keys=True)


# The config sections that shape the exported derivatives (their hash goes into its
# dataset_description.json): a model, training or transport setting changes no exported file.
EXPORT_SECTIONS = (
    "seed",
    "inputs",
    "demo",
    "datasets",
    "preprocess",
    "atlases",
    "extract",
    "qc",
    "dataset",
)


def export_config():
    """The sections of EXPORT_SECTIONS, and the INDI bucket (the source datasets' address)."""
    sections = {s: config[s] for s in EXPORT_SECTIONS}
    return json.dumps(
        sections | {"indi": {"bucket": config["indi"]["bucket"]}}, sort_keys=True
    )


def code_hash(*entries):
    """Hash of every package file the entry modules import, transitively: a code change reruns.

    Snakemake's code trigger sees only the shell text, not the modules a job imports. An entry is
    the module the shell line runs (``python -m brainage.extract`` runs ``brainage.extract.__main__``).
    """
    return brainage._codehash.code_hash(*entries, root=SOURCE_ROOT)


def atlas_source(wildcards):
    """The user's label image (and label table) for a "file" atlas; nothing for the others."""
    spec = ATLASES[wildcards.atlas]
    if spec["name"] != "file":
        return []
    return [spec["path"]] + ([spec["labels"]] if spec.get("labels") else [])


def _fetched(path):
    """A dataset's fetched files by participant_id (read once per version of the file)."""
    return _read_fetched(path, Path(path).stat().st_mtime_ns)


@functools.cache
def _read_fetched(path, mtime_ns):
    # Grouped once: input functions look subjects up thousands of times on large datasets.
    table = brainage.storage.read_tsv(path, dtype=str)
    return {pid: rows for pid, rows in table.groupby("participant_id", sort=False)}


def indi_subjects():
    """(dataset, label) of every downloaded subject: known once each dataset's download ran.

    With raw BIDS datasets, fMRIPrep's set-up is checked first, before any job is submitted.
    """
    if RAW_DATASETS:
        fmriprep_ready()
    subjects = []
    for name in DATASETS:
        table = _fetched(checkpoints.indi_fetch.get(dataset=name).output.files)
        subjects += [(name, pid.removeprefix("sub-")) for pid in table]
    return subjects


def subject_files(label):
    """(dataset, rows of the fetched-files table) of one downloaded subject."""
    for name in DATASETS:
        table = _fetched(checkpoints.indi_fetch.get(dataset=name).output.files)
        if f"sub-{label}" in table:
            return name, table[f"sub-{label}"]
    raise WorkflowError(f"sub-{label}: no downloaded file in any dataset")


def indi_file(kind):
    """Input function: the fetched file of one kind (series, bold, mask) of {subject}."""

    def _path(wildcards):
        name, rows = subject_files(wildcards.subject)
        rows = rows[rows["kind"] == kind]
        if not len(rows):
            raise WorkflowError(
                f"sub-{wildcards.subject}: no downloaded {kind} file in dataset {name}"
            )
        return rows["path"].iloc[0]

    return _path


def pcp_params(wildcards):
    """What a PCP series conversion uses: min_frames, and the pipeline and strategy for provenance.

    Not the whole extract section: its denoising keys do not apply to series PCP already cleaned.
    """
    entry = DATASETS["abide_pcp"]
    return json.dumps(
        {
            "min_frames": config["extract"]["min_frames"],
            "pcp_pipeline": entry["pipeline"],
            "pcp_strategy": entry["strategy"],
        },
        sort_keys=True,
    )


def subject_outputs(kind):
    """Input function: every subject's output of one kind (series, volumes or qc).

    ABIDE PCP ROI series are converted, not extracted: their files live under results/pcp.
    """

    def _outputs(wildcards):
        if not INDI:
            return expand(getattr(rules.extract_subject.output, kind), subject=SUBJECTS)
        paths = []
        for name, label in indi_subjects():
            producer = (
                rules.pcp_rois_subject
                if brainage.download.indi.is_pcp_series(DATASETS[name])
                else rules.extract_subject
            )
            paths.append(getattr(producer.output, kind).format(subject=label))
        return paths

    return _outputs


def every_series(wildcards):
    """Input function: every subject's ROI series of every atlas (extracted: one file per atlas;
    ABIDE PCP ROI series: their one converted file)."""
    paths = subject_outputs("series")(wildcards)
    if INDI:
        extracted = [
            label
            for name, label in indi_subjects()
            if not brainage.download.indi.is_pcp_series(DATASETS[name])
        ]
    else:
        extracted = SUBJECTS
    more = rules.extract_subject.output.more_series
    return paths + [path.format(subject=s) for s in extracted for path in more]


def model_inputs(wildcards):
    """The files a model reads, as its class declares: per-subject series or volumes, or (the
    stack) its base models' predictions of the same fold, so a changed base model reruns it.
    """
    kind = brainage.models.input_kind(base_model(wildcards.model))
    if kind == "predictions":
        return expand(
            "results/models/model-{model}/fold-{fold}/predictions.parquet",
            model=RESOLVED[wildcards.model][1]["models"],
            fold=wildcards.fold,
        )
    return subject_outputs(kind)(wildcards)


def built_atlases(wildcards):
    """The atlas folders, in config order; none when only PCP ROI series are used (nothing is
    extracted then, so no atlas is built)."""
    if INDI and all(brainage.download.indi.is_pcp_series(e) for e in DATASETS.values()):
        return []
    return expand(rules.atlas.output[0], atlas=ATLASES)


def extract_inputs(wildcards):
    """The files one extraction reads: fMRIPrep-format (given, or made here from raw BIDS), or a
    downloaded PCP func_preproc + mask (already denoised: no confounds)."""
    atlas = {"atlases": expand(rules.atlas.output[0], atlas=ATLASES)}
    if LOCAL_BIDS:
        return preprocessed_files(wildcards.subject) | atlas
    if not INDI:
        runs = RUNS[wildcards.subject]
        return {
            kind: [str(run.files[kind]) for run in runs]
            for kind in ("bold", "bold_json", "mask", "confounds")
        } | atlas
    name, _ = subject_files(wildcards.subject)
    if name in RAW_DATASETS:
        return preprocessed_files(wildcards.subject) | atlas
    return {
        "bold": indi_file("bold")(wildcards),
        "mask": indi_file("mask")(wildcards),
        **atlas,
    }


def confounds_arg(wildcards, input):
    """``--confounds FILE...`` when the input has fMRIPrep confounds (PCP volumes are already
    denoised): one table (raw BIDS preprocessed here) or one per run (derivatives)."""
    if "confounds" not in input.keys():
        return ""
    files = input.confounds
    files = [files] if isinstance(files, str) else list(files)
    return "--confounds " + " ".join(shlex.quote(f) for f in files)


def model_outputs(name):
    """One output (predictions.parquet, card.json) of every (model, fold) training job."""
    return expand(
        f"results/models/model-{{model}}/fold-{{fold}}/{name}", model=MODELS, fold=FOLDS
    )


def final_outputs(wildcards):
    """Every results file the report is built from, for ``rule all`` to request.

    Snakemake rebuilds a missing output of a job that is not a target only when a job
    downstream of it must rerun: a deleted volumes file, or the outputs that Snakemake removed
    with a failed training job, would otherwise leave an existing report "up to date". Listed
    here, a missing one is rebuilt, and then everything downstream of it.
    """
    kinds = {"qc"} | {brainage.models.input_kind(base_model(m)) for m in MODELS}
    kinds.discard("predictions")
    subjects = [f for kind in sorted(kinds) for f in subject_outputs(kind)(wildcards)]
    encoders = []
    if "cnn_rnn" in MODELS and config["models"]["cnn_rnn"]["pretrain"]:
        encoders = expand(rules.pretrain_encoder.output.encoder, fold=FOLDS)
    return [
        *rules.participants_manifest.output,
        *subjects,
        *rules.dataset_build.output,
        *encoders,
        *model_outputs("predictions.parquet"),
        *model_outputs("card.json"),
        *rules.evaluate.output,
    ]


def model_params(wildcards):
    """One model's parameters as canonical JSON (only that model reruns when they change); a
    variant's also name its registered ``model``."""
    base, params = RESOLVED[wildcards.model]
    if base != wildcards.model:
        params = {**params, "model": base}
    return json.dumps(params, sort_keys=True)


def pretrain_params(wildcards):
    """The pretraining parameters as canonical JSON: the ``pretrain`` section and the encoder's channels."""
    # Filled from the schema when the config does not set it.
    channels = config["models"]["cnn_rnn"]["channels"]
    return json.dumps({"channels": channels, **config["pretrain"]}, sort_keys=True)


def pretrained_encoder(wildcards):
    """The fold's pretrained frame encoder for a cnn_rnn job with ``pretrain: true``; else nothing."""
    if wildcards.model == "cnn_rnn" and config["models"]["cnn_rnn"]["pretrain"]:
        return rules.pretrain_encoder.output.encoder.format(fold=wildcards.fold)
    return []


def init_encoder_arg(wildcards, input):
    """``--init-encoder FILE`` when the training job starts from a pretrained encoder."""
    encoder = input.get("encoder")  # a path, or an empty list when there is none
    return f"--init-encoder {shlex.quote(encoder)}" if encoder else ""


def model_atlas(wildcards):
    """The first atlas's folder for a model that starts from an atlas (cnn_conn); else nothing."""
    if brainage.models.reads_atlas(base_model(wildcards.model)):
        return rules.atlas.output[0].format(atlas=PRIMARY_ATLAS)
    return []


def atlas_arg(wildcards, input):
    """``--atlas DIR`` when the training job starts from an atlas."""
    atlas = input.get("atlas")  # a path, or an empty list when there is none
    return f"--atlas {shlex.quote(atlas)}" if atlas else ""


def train_launcher(wildcards):
    """How a training job starts Python: torchrun with ``train.processes`` processes for torch models."""
    processes = config["train"]["processes"]
    if processes > 1 and brainage.models.is_torch(base_model(wildcards.model)):
        return f"torchrun --standalone --nnodes 1 --nproc-per-node {processes}"
    return "python"


def train_gpus(wildcards):
    """GPUs a training or pretraining job asks the cluster for (the ``gpu`` resource); None: none at all.

    Torch models get ``train.gpus_per_process`` per process: ``train.processes`` for a train_model
    job, one for a pretrain_encoder job (the cnn_rnn frame encoder). The baselines, and every job when
    ``gpus_per_process`` is 0 (CPU-only clusters), get None, so the job has no ``gpu`` resource: with
    ``gpu=0`` the Slurm executor would still ask for ``--gpus=<gpu_model>:0`` if a profile set a
    ``gpu_model``.
    """
    per_process = config["train"]["gpus_per_process"]
    model = base_model(wildcards.model) if "model" in wildcards.keys() else "cnn_rnn"
    if per_process == 0 or not brainage.models.is_torch(model):
        return None
    processes = config["train"]["processes"] if "model" in wildcards.keys() else 1
    return per_process * processes


def train_dir(wildcards):
    """The folder of one training job (predictions, model card, checkpoint)."""
    return f"results/models/model-{wildcards.model}/fold-{wildcards.fold}"


def train_mem_mb(wildcards, attempt):
    """Memory for a training job, raised on each retry."""
    return 4000 * attempt
