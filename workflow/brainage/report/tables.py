"""HTML tables of the report: metrics, per-subject QC and exclusions (every cell escaped)."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd

from brainage.evaluate.metrics import pearson_r
from brainage.storage import EXCLUSION_COLUMNS

# Decimals per metrics column: errors in years to 0.01 y, unitless scores to 0.001.
_METRIC_DIGITS = {
    "mae": 2, "rmse": 2, "mae_corrected": 2, "delta_mae_vs_dummy": 2, "delta_mae_vs_ridge": 2,
    "r": 3, "r2": 3, "mae_over_sd": 3, "r_corrected": 3, "delta_age_r": 3, "delta_age_r_corrected": 3,
}
# The columns of the bias-corrected table (shown apart: the main tables show raw accuracy only).
CORRECTED_COLUMNS = ("mae_corrected", "r_corrected", "delta_age_r", "delta_age_r_corrected")
CORRECTED_HEADING = "Bias-corrected predictions (for brain-age delta analyses)"
CORRECTED_TEXT = (
    "Bias-corrected predictions are for brain-age delta analyses (the delta: predicted minus true age, "
    "e.g. compared between groups or related to a clinical score), which need a delta uncorrelated with age; "
    "a model that regresses towards the mean age has a raw delta that falls with age. The correction "
    "(corrected = (predicted - b) / a, from the age-bias line predicted = a * age + b) stretches the "
    "predictions, so their MAE grows by construction, roughly by the factor 1/a: it is not a measure of "
    "accuracy (the raw metrics above are). The correlation of the delta with age on the outer test folds, "
    "before and after correction, shows whether the correction worked: near 0 after it."
)
CORRECTED_LEGEND = (
    "mae_corrected (years), r_corrected: MAE and Pearson r of the corrected predictions; delta_age_r, "
    "delta_age_r_corrected: Pearson r of the delta (predicted minus true age) with true age, raw and "
    "corrected, over the pooled test predictions (n/a where undefined). A constant prediction, such as the "
    "dummy's (never corrected: its bias-line slope is below 0.1), has a delta-age r of -1."
)
SET_NAMES = {"cv": "cross-validation", "test": "held-out test"}
# A column X with X_ci_low and X_ci_high is shown as one cell, "value [low, high]".
_CI = ("_ci_low", "_ci_high")
# A QC table longer than this starts collapsed, so the exclusions and methods stay in view.
QC_OPEN_MAX_ROWS = 25
NO_EXCLUSION = "No subject was excluded."


def format_number(value: object, digits: int) -> str:
    """Format a number with ``digits`` decimals; missing values as "n/a" (BIDS style)."""
    if value is None or pd.isna(value):
        return "n/a"
    return f"{float(value):.{digits}f}"


def _format_cell(value: object) -> str:
    if value is None or pd.isna(value):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def html_table(df: pd.DataFrame, css_class: str) -> str:
    """Render a table of strings as HTML; pandas escapes every cell and header."""
    return df.to_html(index=False, escape=True, border=0, classes=css_class, na_rep="n/a")


def metrics_table(metrics: pd.DataFrame) -> str:
    """Render every column of the metrics table, rounded per column.

    Parameters
    ----------
    metrics : DataFrame
        One row per model (model, n, mae, rmse, r, r2, mae_over_sd, delta_mae_vs_dummy, and any
        other columns); errors in years. A column with ``<column>_ci_low`` and
        ``<column>_ci_high`` beside it is shown with its interval in brackets, in one cell.
        :func:`metrics_sections` drops the :data:`CORRECTED_COLUMNS` first.

    Returns
    -------
    str
        An HTML ``<table>``.
    """
    shown = pd.DataFrame(index=metrics.index)
    intervals = {c for c in metrics.columns if all(f"{c}{end}" in metrics.columns for end in _CI)}
    for column in metrics.columns:
        if column.endswith(_CI) and column.removesuffix(_CI[0]).removesuffix(_CI[1]) in intervals:
            continue
        if column in intervals:
            digits = _METRIC_DIGITS.get(column, 3)
            shown[column] = [
                value if low == "n/a" else f"{value} [{low}, {high}]"
                for value, low, high in zip(*(
                    [format_number(v, digits) for v in metrics[f"{column}{end}"]] for end in ("", *_CI)))
            ]
        elif column in _METRIC_DIGITS:
            shown[column] = [format_number(v, _METRIC_DIGITS[column]) for v in metrics[column]]
        elif column == "n":
            shown[column] = [format_number(v, 0) for v in metrics[column]]
        else:
            shown[column] = [_format_cell(v) for v in metrics[column]]
    return html_table(shown, "metrics")


def split_sets(metrics: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cross-validation and held-out test rows of a metrics table, each without its ``set`` column.

    A table without a ``set`` column is all cross-validation.
    """
    if "set" not in metrics.columns:
        return metrics, metrics.iloc[:0]
    rows = metrics.drop(columns="set")
    return rows[metrics["set"] == "cv"].reset_index(drop=True), rows[metrics["set"] == "test"].reset_index(drop=True)


def raw_columns(metrics: pd.DataFrame) -> pd.DataFrame:
    """``metrics`` without the :data:`CORRECTED_COLUMNS` (and their intervals, if any): raw accuracy."""
    corrected = [c for c in metrics.columns if c.removesuffix(_CI[0]).removesuffix(_CI[1]) in CORRECTED_COLUMNS]
    return metrics.drop(columns=corrected)


def metrics_sections(metrics: pd.DataFrame, heldout: str) -> str:
    """Render the raw metrics: one table without a held-out set, else a table per set under its heading.

    The corrected columns (:data:`CORRECTED_COLUMNS`) are left out: :func:`corrected_section`
    shows them apart, so the tables that rank the models show raw accuracy only.

    Parameters
    ----------
    metrics : DataFrame
        metrics.tsv: one row per model and set (``cv``, ``test``).
    heldout : str
        What was held out, plain text (e.g. "sites NYU, UM"); names the held-out heading.

    Returns
    -------
    str
        HTML: without held-out rows the cross-validation table alone (no ``set`` column), as
        before held-out sets existed; else a "Cross-validation" and a "Held-out test (...)"
        section, each with its table.
    """
    cv, test = split_sets(raw_columns(metrics))
    if test.empty:
        return metrics_table(cv)
    heading = html.escape(f"Held-out test ({heldout})")
    note = html.escape(
        "Each held-out subject's predicted age is the mean of the fold models' predictions; "
        "delta_mae_vs_dummy compares with the dummy on the same held-out subjects."
    )
    return (f"<h3>Cross-validation</h3>\n{metrics_table(cv)}\n"
            f'<h3 id="held-out-test">{heading}</h3>\n<p>{note}</p>\n{metrics_table(test)}')


def corrected_table(metrics: pd.DataFrame) -> str:
    """Render each model's corrected MAE and r and its delta-age correlations, raw and corrected.

    Parameters
    ----------
    metrics : DataFrame
        metrics.tsv: model, the :data:`CORRECTED_COLUMNS`, and optionally ``set`` (``cv``, ``test``).

    Returns
    -------
    str
        An HTML ``<table>``: model, the four columns (MAE in years to 0.01, r to 0.001); with
        held-out rows also a ``set`` column ("cross-validation", "held-out test"), the
        cross-validation rows first.
    """
    cv, test = split_sets(metrics)
    rows = cv if test.empty else pd.concat(
        [cv.assign(set=SET_NAMES["cv"]), test.assign(set=SET_NAMES["test"])], ignore_index=True)
    shown = pd.DataFrame({"model": [_format_cell(v) for v in rows["model"]]})
    if not test.empty:
        shown["set"] = rows["set"].tolist()
    for column in CORRECTED_COLUMNS:
        shown[column] = [format_number(v, _METRIC_DIGITS[column]) for v in rows[column]]
    return html_table(shown, "metrics corrected")


def corrected_section(metrics: pd.DataFrame, applied: bool = True) -> str:
    """The heading, the note on what corrected predictions are for, the table and its legend.

    Parameters
    ----------
    metrics : DataFrame
        metrics.tsv (see :func:`corrected_table`).
    applied : bool
        ``evaluate.bias_correction``: when false, a sentence says the corrected predictions equal the raw ones.

    Returns
    -------
    str
        HTML: an ``<h2>`` :data:`CORRECTED_HEADING`, a paragraph :data:`CORRECTED_TEXT`, the table
        and :data:`CORRECTED_LEGEND`.
    """
    text = CORRECTED_TEXT
    if not applied:
        text += " No age-bias correction was applied in this run: the corrected predictions equal the raw ones."
    return (f'<h2 id="bias-corrected">{html.escape(CORRECTED_HEADING)}</h2>\n<p>{html.escape(text)}</p>\n'
            f"{corrected_table(metrics)}\n<p>{html.escape(CORRECTED_LEGEND)}</p>")


def site_section(predictions: pd.DataFrame, cohort: pd.DataFrame, models: list[str]) -> str:
    """Render the cross-validation accuracy per site: n, age range, and each model's MAE (r).

    Site is the largest confound of multi-site data: a model can look accurate overall and fail
    at the sites whose scanner or age range differs from the others'.

    Parameters
    ----------
    predictions : DataFrame
        Evaluated predictions: participant_id, model, set, age, predicted_age (years); only the
        cross-validation rows (set ``cv``) are used.
    cohort : DataFrame
        participant_id, site.
    models : list of str
        Column order.

    Returns
    -------
    str
        A heading, a note and an HTML table with one row per site (sorted by name); empty
        when there is one site only.
    """
    cv = predictions[predictions["set"] == "cv"]
    site = cohort.set_index("participant_id")["site"].astype(str)
    cv = cv.assign(site=cv["participant_id"].map(site).fillna("n/a"))
    if cv["site"].nunique() < 2:
        return ""
    rows = []
    for name, group in cv.groupby("site", sort=True):
        ages = group.drop_duplicates("participant_id")["age"]
        row = {"site": name, "n": str(len(ages)), "age range": f"{ages.min():.1f}-{ages.max():.1f}"}
        for model in models:
            part = group[group["model"] == model]
            mae = float(np.abs(part["predicted_age"] - part["age"]).mean()) if len(part) else float("nan")
            r = pearson_r(part["age"].to_numpy(), part["predicted_age"].to_numpy())
            row[model] = f"{format_number(mae, 2)} ({format_number(r, 2)})"
        rows.append(row)
    note = ("Cross-validation (out-of-fold) predictions of each site's subjects: MAE in years, with Pearson r "
            "of predicted on true age within the site in brackets (n/a for constant predictions or a single "
            "subject). Within a site, r depends on its age range: a narrow range gives a small r for any model.")
    return f"<h3>Accuracy per site</h3>\n<p>{html.escape(note)}</p>\n{html_table(pd.DataFrame(rows), 'sites')}"


def qc_table(cohort: pd.DataFrame, clean: pd.DataFrame | None = None) -> str:
    """Render one row per analysed subject: site, age, frames kept / total, mean FD, and clean time.

    Parameters
    ----------
    cohort : DataFrame
        participant_id, site, age (years), n_frames_kept, n_timepoints, mean_fd (mm).
    clean : DataFrame, optional
        participant_id, seconds_kept (s), fd_dvars_r, fd_dvars_r_clean (from the extraction QC
        records; :func:`brainage.report.extract_qc.clean_qc`): adds those three columns.

    Returns
    -------
    str
        A ``<details>`` block (open when the table is short) holding an HTML ``<table>``.
    """
    cohort = cohort.sort_values("participant_id")
    shown = pd.DataFrame({
        "participant_id": cohort["participant_id"].astype(str),
        "site": cohort["site"].astype(str),
        "age (years)": [format_number(v, 1) for v in cohort["age"]],
        "frames kept / total": [
            f"{format_number(k, 0)} / {format_number(t, 0)}"
            for k, t in zip(cohort["n_frames_kept"], cohort["n_timepoints"])
        ],
        "mean FD (mm)": [format_number(v, 3) for v in cohort["mean_fd"]],
    })
    if clean is not None:
        rows = clean.set_index("participant_id").reindex(shown["participant_id"])
        for column, title, digits in (("seconds_kept", "clean data (s)", 0), ("fd_dvars_r", "FD-DVARS r before", 2),
                                      ("fd_dvars_r_clean", "FD-DVARS r after", 2)):
            shown[title] = [format_number(v, digits) for v in rows[column]]
    state = " open" if len(shown) <= QC_OPEN_MAX_ROWS else ""
    summary = f"Per-subject QC of the {len(shown)} analysed subjects"
    return f"<details{state}><summary>{html.escape(summary)}</summary>\n{html_table(shown, 'qc')}\n</details>"


def exclusions_table(exclusions: pd.DataFrame) -> str:
    """Render every exclusion (participant_id, stage, reason), or say that there was none.

    Returns
    -------
    str
        An HTML ``<table>``, or a paragraph with :data:`NO_EXCLUSION` when the table is empty.
    """
    if exclusions.empty:
        return f'<p class="none">{html.escape(NO_EXCLUSION)}</p>'
    shown = exclusions[list(EXCLUSION_COLUMNS)].map(_format_cell)
    return html_table(shown, "exclusions")
