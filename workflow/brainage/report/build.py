"""Build the report: read the inputs, draw the figures, write one self-contained HTML file atomically."""

from __future__ import annotations

import datetime
import logging
import os

from brainage import storage
from brainage.report.figures import model_figures
from brainage.report.inputs import load_inputs, read_cards
from brainage.report.methods import heldout_description, methods_paragraphs
from brainage.report.page import render_page, summary_text
from brainage.report.tables import exclusions_table, metrics_sections, qc_table

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
) -> None:
    """Write the HTML report of one workflow run.

    Parameters
    ----------
    config : dict
        The full resolved workflow config (seed, inputs, demo, atlas, extract, dataset, models, evaluate).
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

    Raises
    ------
    ConfigError
        If ``config`` lacks a key the methods text needs.
    InputDataError
        If an input lacks required columns or the inputs disagree (see :func:`load_inputs`).
    """
    data = load_inputs(config, manifest, cohort, exclusions, metrics, predictions, cards)
    n_excluded = int(data.exclusions["participant_id"].nunique())
    page = render_page(
        # The manifest's datasets: one name for local data, each downloaded dataset's for INDI.
        title=f"brainage report: {', '.join(data.manifest['dataset'].astype(str).unique())}",
        date=datetime.date.today().isoformat(),
        summary=summary_text(data.manifest, data.cohort, data.exclusions, data.metrics),
        figures=model_figures(data.predictions, data.cohort, data.metrics),
        metrics_html=metrics_sections(data.metrics, heldout_description(config["dataset"]) or "set 'test'"),
        exclusions_html=exclusions_table(data.exclusions),
        n_excluded=n_excluded,
        qc_html=qc_table(data.cohort),
        methods=methods_paragraphs(config, data.cohort, data.cards, len(data.manifest),
                                   read_cards(fmriprep_records, "fMRIPrep job record")),
        held_out=bool((data.predictions["set"] == "test").any()),
    )
    with storage.atomic_path(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    logger.info("wrote %s (%d models, %d excluded subjects)", out, data.metrics["model"].nunique(), n_excluded)
