"""Config validation, the subject list, input functions, target lists and rerun triggers."""

import hashlib
import json
from pathlib import Path

from snakemake.utils import validate

import brainage.demo
import brainage.models
import brainage.participants

# Defaults from the schema are filled in; an unknown or malformed key stops here, named.
validate(config, "../config/config.schema.yaml")

DEMO = config["inputs"]["source"] == "demo"
TASK = config["inputs"]["task"]
SPACE = config["inputs"]["space"]
RES = str(config["demo"]["voxel_size"]) if DEMO else config["inputs"]["res"]
DERIV = "resources/demo/derivatives" if DEMO else config["inputs"]["derivatives"]
PARTICIPANTS = (
    "resources/demo/participants.tsv" if DEMO else config["inputs"]["participants"]
)
MODELS = config["train"]["models"]
FOLDS = list(range(config["dataset"]["n_folds"]))

# fMRIPrep file names (23-25), with {subject} the BIDS label without "sub-".
BOLD = f"{DERIV}/sub-{{subject}}/func/sub-{{subject}}_task-{TASK}_space-{SPACE}_res-{RES}_desc-preproc_bold.nii.gz"
BOLD_JSON = f"{DERIV}/sub-{{subject}}/func/sub-{{subject}}_task-{TASK}_space-{SPACE}_res-{RES}_desc-preproc_bold.json"
MASK = f"{DERIV}/sub-{{subject}}/func/sub-{{subject}}_task-{TASK}_space-{SPACE}_res-{RES}_desc-brain_mask.nii.gz"
CONFOUNDS = f"{DERIV}/sub-{{subject}}/func/sub-{{subject}}_task-{TASK}_desc-confounds_timeseries.tsv"
CONFOUNDS_JSON = f"{DERIV}/sub-{{subject}}/func/sub-{{subject}}_task-{TASK}_desc-confounds_timeseries.json"


def bold_template(wildcards):
    """The BOLD file pattern itself (a function, so Snakemake leaves {subject} unexpanded)."""
    return BOLD


def _subjects():
    """Subjects to extract: the demo's, or those of participants.tsv that have a BOLD.

    Subjects without a BOLD are not dropped silently: the participants stage records them.
    """
    if DEMO:
        return brainage.demo.subject_ids(config["demo"]["n_subjects"])
    ids = brainage.participants.read_participant_ids(PARTICIPANTS)
    return [s for s in ids if Path(BOLD.format(subject=s)).exists()]


SUBJECTS = _subjects()


wildcard_constraints:
    subject="[A-Za-z0-9]+",
    model="|".join(MODELS),
    fold=r"\d+",


def config_json(*sections):
    """The config sub-tree(s) as canonical JSON: a parameter change reruns the rule."""
    if len(sections) == 1:
        return json.dumps(config[sections[0]], sort_keys=True)
    return json.dumps({s: config[s] for s in sections}, sort_keys=True)


def code_hash(*modules):
    """Hash of the package code a stage runs (+ shared modules): a code change reruns it.

    Snakemake's code trigger sees only the shell text, not the modules a job imports.
    """
    root = Path(workflow.basedir) / "workflow" / "brainage"
    paths = []
    for name in (*modules, "storage"):
        paths += sorted((root / name).rglob("*.py")) if (root / name).is_dir() else []
        paths += [root / f"{name}.py"] if (root / f"{name}.py").exists() else []
    paths += [root / "__init__.py", root / "errors.py", root / "_cli.py"]
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def atlas_source(wildcards):
    """The user's label image when atlas.name is "file"; nothing to read for "kmeans"."""
    return [config["atlas"]["path"]] if config["atlas"]["name"] == "file" else []


def subject_outputs(kind):
    """Every subject's extraction output of one kind (series, volumes or qc)."""
    pattern = {
        "series": rules.extract_subject.output.series,
        "volumes": rules.extract_subject.output.volumes,
        "qc": rules.extract_subject.output.qc,
    }[kind]
    return expand(pattern, subject=SUBJECTS)


def model_inputs(wildcards):
    """The per-subject files a model reads ("series" or "volumes"), as its class declares."""
    return subject_outputs(brainage.models.model_class(wildcards.model).input_kind)


def model_outputs(name):
    """One output (predictions.parquet, card.json) of every (model, fold) training job."""
    return expand(
        f"results/models/model-{{model}}/fold-{{fold}}/{name}", model=MODELS, fold=FOLDS
    )


def model_params(wildcards):
    """One model's parameters as canonical JSON (only that model reruns when they change)."""
    return json.dumps(config["models"].get(wildcards.model, {}), sort_keys=True)


def train_dir(wildcards):
    """The folder of one training job (predictions, model card, checkpoint)."""
    return f"results/models/model-{wildcards.model}/fold-{wildcards.fold}"


def train_mem_mb(wildcards, attempt):
    """Memory for a training job, raised on each retry."""
    return 4000 * attempt
