"""Load the report's inputs and check that they are complete and agree with each other."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from brainage import storage
from brainage.storage import COHORT_COLUMNS, EXCLUSION_COLUMNS, MANIFEST_COLUMNS
from brainage.errors import ConfigError, InputDataError

logger = logging.getLogger(__name__)

# Columns each input must have (the contracts of the stages that write them); extra columns are kept.
METRIC_COLUMNS = (
    "model", "set", "n", "mae", "rmse", "r", "r2", "mae_over_sd", "mae_corrected", "r_corrected",
    "delta_age_r", "delta_age_r_corrected", "delta_mae_vs_dummy",
)
PREDICTION_COLUMNS = ("participant_id", "model", "set", "fold", "age", "predicted_age", "predicted_age_corrected")

# Keys of the resolved workflow config that the methods text reads (the schema fills them all).
CONFIG_KEYS = {
    "inputs": ("source", "derivatives", "participants", "bids_dir", "dataset", "task", "space", "res"),
    "extract": (
        "denoise", "custom", "scrub", "fd_threshold", "std_dvars_threshold", "scrub_min_segment",
        "high_pass", "low_pass", "detrend", "standardize", "min_frames", "min_seconds", "min_region_coverage",
        "on_region_loss", "volume_voxel_size", "volume_scaling",
    ),
    "dataset": ("n_folds", "group_by_site", "test_sites", "test_datasets"),
    "train": ("models",),
    "qc": ("max_mean_fd", "high_motion_fd", "max_high_motion_fraction", "max_mean_std_dvars"),
    "models": (),
    "evaluate": ("bias_correction",),
}
DEMO_KEYS = ("n_subjects", "sites", "n_timepoints", "tr", "voxel_size", "age_min", "age_max")


@dataclass(frozen=True)
class ReportInputs:
    """Everything the report shows, already read and checked.

    Attributes
    ----------
    config : dict
        The full resolved workflow config.
    manifest, cohort, exclusions, metrics, predictions : DataFrame
        One row per listed subject / analysed subject / exclusion / model / (subject, model).
    cards : list of dict
        Model cards, one per (model, fold).
    extract_qc : list of dict
        Extraction QC records, one per extracted run (included or excluded).
    atlases : list of dict
        The built ``atlas.json`` of each configured atlas, in config order, with ``n_regions``.
    """

    config: dict
    manifest: pd.DataFrame
    cohort: pd.DataFrame
    exclusions: pd.DataFrame
    metrics: pd.DataFrame
    predictions: pd.DataFrame
    cards: list[dict] = field(default_factory=list)
    extract_qc: list[dict] = field(default_factory=list)
    atlases: list[dict] = field(default_factory=list)


def check_config(config: dict) -> None:
    """Raise ``ConfigError`` listing every key the report needs that ``config`` lacks.

    Parameters
    ----------
    config : dict
        The full resolved workflow config (``seed``, ``inputs``, ``demo``, ``atlases``, ``extract``,
        ``dataset``, ``models``, ``evaluate``), as filled in by config/config.schema.yaml.
    """
    missing = [] if "seed" in config else ["seed"]
    required = dict(CONFIG_KEYS)
    if config.get("inputs", {}).get("source") == "demo":
        required["demo"] = DEMO_KEYS
    if config.get("inputs", {}).get("source") == "indi":
        required["indi"] = ("bucket", "endpoint_url")
        required["preprocess"] = ("engine", "version", "image", "fs_reconall", "extra_args")
        missing += [] if isinstance(config.get("datasets"), list) and config["datasets"] else ["datasets"]
    for section, keys in required.items():
        value = config.get(section)
        if not isinstance(value, dict):
            missing.append(section)
            continue
        missing += [f"{section}.{key}" for key in keys if key not in value]
    atlases = config.get("atlases")
    if not isinstance(atlases, list) or not atlases or not all(isinstance(a, dict) and "name" in a for a in atlases):
        missing.append("atlases (a list of atlas specs, each with a name)")
    if missing:
        raise ConfigError(
            f"report config: missing {', '.join(missing)}; expected the full resolved workflow config "
            "(config/config.yaml validated against config/config.schema.yaml)"
        )


def read_tsv(path: str | os.PathLike, columns: tuple[str, ...]) -> pd.DataFrame:
    """Read a BIDS-style TSV ("n/a" = missing) and check it has ``columns``.

    Identifiers (``participant_id``, ``model``, ``site``, ``stage``, ``reason``) stay strings even
    when they look like numbers.
    """
    text_columns = {"participant_id", "model", "set", "site", "stage", "reason", "dataset", "sex"}
    df = storage.read_tsv(path, dtype={c: str for c in text_columns})
    storage.require_columns(df, path, columns)
    return df


def read_cards(paths: list[str | os.PathLike], what: str = "model card") -> list[dict]:
    """Read model cards or job records (JSON objects); their keys are read defensively later, with ``.get``."""
    cards = []
    for path in paths:
        card = storage.read_json(path)
        if not isinstance(card, dict):
            raise InputDataError(f"{path}: expected a JSON object ({what}), found {type(card).__name__}")
        cards.append(card)
    return cards


def read_extract_qc(paths: list[str | os.PathLike]) -> list[dict]:
    """Read the extraction QC records (``results/extract/sub-*/sub-*_qc.json``).

    Returns
    -------
    list of dict
        One record per file, ``participant_id`` normalised to ``sub-<label>`` (as the dataset
        stage does). Keys beyond ``participant_id`` and ``status`` are read with ``.get``
        later: records of ROI series used as distributed (PCP) have no clean time or atlases.

    Raises
    ------
    InputDataError
        If a file is not a JSON object with ``participant_id`` and ``status``.
    """
    records = read_cards(paths, "extraction QC record")
    for path, record in zip(paths, records, strict=True):
        missing = [key for key in ("participant_id", "status") if key not in record]
        if missing:
            raise InputDataError(f"{path}: extraction QC record lacks {missing}")
        record["participant_id"] = "sub-" + str(record["participant_id"]).removeprefix("sub-")
    return records


def read_atlas_dirs(paths: list[str | os.PathLike]) -> list[dict]:
    """Read each built atlas folder's ``atlas.json`` and count the rows of its ``labels.tsv``.

    Parameters
    ----------
    paths : list of path
        ``resources/atlases/<id>`` folders (written by ``python -m brainage.download atlas``).

    Returns
    -------
    list of dict
        The ``atlas.json`` objects (``id``, ``name``, ``kind``, ``space``, ``source``,
        ``citation``, ``radius_mm``, ``spec``, ...) with ``n_regions`` added.

    Raises
    ------
    InputDataError
        If ``atlas.json`` or ``labels.tsv`` is missing or malformed.
    """
    metas = []
    for folder in map(Path, paths):
        if not (folder / "atlas.json").is_file():
            raise InputDataError(f"{folder / 'atlas.json'}: file not found (expected an atlas folder written by "
                                 "python -m brainage.download atlas)")
        meta = read_cards([folder / "atlas.json"], "atlas description")[0]
        missing = [key for key in ("id", "name", "kind") if key not in meta]
        if missing:
            raise InputDataError(f"{folder / 'atlas.json'}: atlas description lacks {missing}")
        labels = storage.read_tsv(folder / "labels.tsv", dtype=str)
        storage.require_columns(labels, folder / "labels.tsv", ("index", "name"), "atlas label table")
        metas.append(meta | {"n_regions": len(labels)})
    return metas


def load_inputs(
    config: dict,
    manifest: str | os.PathLike,
    cohort: str | os.PathLike,
    exclusions: str | os.PathLike,
    metrics: str | os.PathLike,
    predictions: str | os.PathLike,
    cards: list[str | os.PathLike],
    extract_qc: list[str | os.PathLike] = (),
    atlases: list[str | os.PathLike] = (),
) -> ReportInputs:
    """Read every input of the report and check that they agree.

    ``extract_qc`` (extraction QC records) and ``atlases`` (built atlas folders, in config
    order) may be empty: the report then leaves out the extraction QC view and describes the
    atlases from the config.

    Raises
    ------
    ConfigError
        If ``config`` lacks a key the methods text needs.
    InputDataError
        If a file lacks required columns, or the predictions name a model missing from the metrics
        or a subject missing from the cohort (stale files from different runs), or the atlas
        folders do not match ``config["atlases"]``.
    """
    check_config(config)
    cohort_df = storage.read_table(cohort, kind="cohort")
    storage.require_columns(cohort_df, cohort, COHORT_COLUMNS)
    predictions_df = storage.read_table(predictions, kind="evaluated_predictions")
    storage.require_columns(predictions_df, predictions, PREDICTION_COLUMNS)
    inputs = ReportInputs(
        config=config,
        manifest=read_tsv(manifest, MANIFEST_COLUMNS),
        cohort=cohort_df.astype({"participant_id": str, "site": str}),
        exclusions=read_tsv(exclusions, EXCLUSION_COLUMNS),
        metrics=read_tsv(metrics, METRIC_COLUMNS),
        predictions=predictions_df.astype({"participant_id": str, "model": str, "set": str}),
        cards=read_cards(cards),
        extract_qc=read_extract_qc(list(extract_qc)),
        atlases=read_atlas_dirs(list(atlases)),
    )
    _check_agreement(inputs, Path(metrics), Path(predictions), Path(cohort))
    _check_atlases(config["atlases"], inputs.atlases, list(atlases))
    logger.info(
        "report inputs: %d listed, %d analysed, %d exclusion rows, %d models, %d cards",
        len(inputs.manifest), len(inputs.cohort), len(inputs.exclusions), len(inputs.metrics), len(inputs.cards),
    )
    return inputs


def _check_agreement(inputs: ReportInputs, metrics: Path, predictions: Path, cohort: Path) -> None:
    # Files from two different runs would give a report whose figures and tables disagree.
    no_metrics = sorted(set(inputs.predictions["model"]) - set(inputs.metrics["model"]))
    if no_metrics:
        raise InputDataError(
            f"{metrics}: no row for model(s) {', '.join(no_metrics)} found in {predictions}; rerun evaluate"
        )
    have = set(zip(inputs.metrics["model"], inputs.metrics["set"]))
    need = set(zip(inputs.predictions["model"], inputs.predictions["set"]))
    no_set = sorted(f"{model} (set {name})" for model, name in need - have)
    if no_set:
        raise InputDataError(f"{metrics}: no row for {', '.join(no_set)} found in {predictions}; rerun evaluate")
    unknown = sorted(set(inputs.predictions["participant_id"]) - set(inputs.cohort["participant_id"]))
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise InputDataError(f"{predictions}: subject(s) {shown} not in the cohort {cohort}; rerun evaluate")


def _check_atlases(specs: list[dict], metas: list[dict], paths: list) -> None:
    """The atlas folders, when given, are the configured atlases in config order (by registry name)."""
    if not metas:
        return
    found = [meta["name"] for meta in metas]
    expected = [spec["name"] for spec in specs]
    if found != expected:
        raise InputDataError(
            f"atlas folders {', '.join(map(str, paths))} hold the atlases {found}, but config atlases lists "
            f"{expected}; pass one folder per configured atlas, in config order"
        )
