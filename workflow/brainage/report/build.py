"""Build the report: read the inputs, draw the figures, write one self-contained HTML file atomically."""

from __future__ import annotations

import base64
import datetime
import logging
import os
from pathlib import Path

from brainage import storage
from brainage.report.extract_qc import qc_section
from brainage.report.figures import model_figures
from brainage.report.inputs import load_inputs, read_cards
from brainage.report.methods import heldout_description, methods_paragraphs
from brainage.report.page import render_page, summary_text
from brainage.report.tables import (
    corrected_section,
    exclusions_table,
    metrics_sections,
    site_section,
)

logger = logging.getLogger(__name__)


def build_report(
    config: dict,
    manifest: str | os.PathLike,
    cohort: str | os.PathLike,
    exclusions: str | os.PathLike,
    metrics: str | os.PathLike,
    predictions: str | os.PathLike,
    cards: list[str | os.PathLike],
    out: str | os.PathLike,
    fmriprep_records: list[str | os.PathLike] = (),
    extract_qc: list[str | os.PathLike] = (),
    atlases: list[str | os.PathLike] = (),
    figures_out: str | os.PathLike | None = None,
) -> None:
    """Write the HTML report of one workflow run.

    Parameters
    ----------
    config : dict
        The full resolved workflow config (seed, inputs, demo, atlases, extract, dataset, models, evaluate).
    manifest : path
        results/participants.tsv (participant_id, dataset, site, age, sex, ...; "n/a" missing).
    cohort : path
        results/dataset/cohort.parquet (kind "cohort").
    exclusions : path
        results/dataset/exclusions.tsv (participant_id, stage, reason; may hold only the header).
    metrics : path
        results/evaluate/metrics.tsv (one row per model and set: "cv", and "test" for a held-out set).
    predictions : path
        results/evaluate/predictions.parquet (kind "evaluated_predictions").
    cards : list of path
        Model cards results/models/model-*/fold-*/card.json.
    out : path
        The HTML file to write (atomically).
    fmriprep_records : list of path
        The fMRIPrep jobs' records (results/preprocess/.../*_fmriprep.json); none for derivative inputs.
    extract_qc : list of path
        The extraction QC records (results/extract/sub-*/sub-*_qc.json), included and excluded runs:
        clean time, FD-DVARS correlations and lost regions in the QC section. None: that view is left out.
    atlases : list of path
        The built atlas folders (resources/atlases/<id>), in config order: their atlas.json
        (kind, source, citation) and labels.tsv (region count) describe the atlases in the methods.
        None: the atlases are described from the config.
    figures_out : path, optional
        A folder to write each model's figure into as well, ``<model>.png`` (the same PNGs the
        page embeds; Snakemake's ``--report`` shows them with captions).

    Raises
    ------
    ConfigError
        If ``config`` lacks a key the methods text needs.
    InputDataError
        If an input lacks required columns or the inputs disagree (see :func:`load_inputs`).
    """
    data = load_inputs(config, manifest, cohort, exclusions, metrics, predictions, cards, extract_qc, atlases)
    n_excluded = int(data.exclusions["participant_id"].nunique())
    figures = model_figures(data.predictions, data.cohort, data.metrics)
    if figures_out is not None:
        _write_figures(figures, Path(figures_out))
    page = render_page(
        # The manifest's datasets: one name for local data, each downloaded dataset's for INDI.
        title=f"brainage report: {', '.join(data.manifest['dataset'].astype(str).unique())}",
        date=datetime.date.today().isoformat(),
        summary=summary_text(data.manifest, data.cohort, data.exclusions, data.metrics),
        figures=figures,
        metrics_html=metrics_sections(data.metrics, heldout_description(config["dataset"]) or "set 'test'")
        + site_section(data.predictions, data.cohort, list(dict.fromkeys(data.metrics["model"]))),
        corrected_html=corrected_section(data.metrics, bool(config["evaluate"]["bias_correction"])),
        exclusions_html=exclusions_table(data.exclusions),
        n_excluded=n_excluded,
        qc_html=qc_section(data.cohort, data.extract_qc, config["extract"]),
        methods=methods_paragraphs(config, data.cohort, data.cards, len(data.manifest),
                                   read_cards(fmriprep_records, "fMRIPrep job record"), data.atlases),
        held_out=bool((data.predictions["set"] == "test").any()),
    )
    with storage.atomic_path(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    logger.info("wrote %s (%d models, %d excluded subjects)", out, data.metrics["model"].nunique(), n_excluded)


def _write_figures(figures: dict[str, str], folder: Path) -> None:
    """Each model's figure (base64 PNG, as embedded in the page) as ``folder/<model>.png``, atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.png"):
        if stale.stem not in figures:
            stale.unlink()
    for model, png in figures.items():
        with storage.atomic_path(folder / f"{model}.png") as tmp:
            tmp.write_bytes(base64.b64decode(png))
