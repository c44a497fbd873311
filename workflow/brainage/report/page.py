"""Assemble the self-contained HTML page: summary, figures, tables and methods (no external resources)."""

from __future__ import annotations

import html

import pandas as pd

from brainage._version import source_version
from brainage.report.tables import format_number, split_sets

# Inline style only: the report must open offline, from an e-mail or a cluster's file system.
_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; max-width: 60rem;
       margin: 2rem auto; padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2rem; } .meta { color: #666; margin-top: 0; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2rem; margin-top: 2rem; }
.summary { background: #f4f6f8; border-left: 4px solid #4a7ab5; padding: 0.6rem 1rem; }
table { border-collapse: collapse; margin: 0.5rem 0; font-size: 0.9rem; }
th, td { padding: 0.25rem 0.6rem; border-bottom: 1px solid #ddd; text-align: right; }
th { background: #eef1f4; } td:first-child, th:first-child { text-align: left; }
table.exclusions td, table.exclusions th, table.qc td:nth-child(2), table.qc th:nth-child(2) { text-align: left; }
table.exclusions { border-left: 4px solid #c0392b; }
table.lost-regions td:nth-child(2), table.lost-regions th:nth-child(2) { text-align: left; }
.none { color: #2e7d32; font-weight: bold; }
figure { margin: 1rem 0; } figure img { max-width: 100%; height: auto; }
summary { cursor: pointer; font-weight: bold; margin: 0.5rem 0; }
"""


# Filled with str.format: every value is escaped or an escaped fragment before it gets here.
_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
<h1>{title}</h1>
<p class="meta">{date} &middot; brainage {version}</p>
<p class="summary">{summary}</p>
<h2>Predicted versus true age</h2>
{figures}
<h2>Metrics (raw predictions)</h2>
{metrics}
<p>Errors in years; r: Pearson correlation; mae_over_sd: MAE divided by the SD of the true ages;
delta_mae_vs_dummy, delta_mae_vs_ridge: MAE minus the dummy's, the connectome ridge's MAE on the same
subjects (negative is better). In brackets: 95 % bootstrap interval (subjects resampled with
replacement, the same resamples for every model, so the differences are paired: an interval that
excludes 0 is a difference at the 5 % level).</p>
{corrected}
<h2>Excluded subjects ({n_excluded})</h2>
{exclusions}
<h2>Quality control</h2>
{qc}
<h2>Methods</h2>
{methods}
</body>
</html>
"""


def summary_text(manifest: pd.DataFrame, cohort: pd.DataFrame, exclusions: pd.DataFrame,
                 metrics: pd.DataFrame) -> str:
    """Write the one-paragraph summary: subject counts, best model and its MAE against the dummy's.

    Parameters
    ----------
    manifest, cohort, exclusions, metrics : DataFrame
        Listed subjects, analysed subjects, exclusions (participant_id, stage, reason), metrics (MAE in years).

    Returns
    -------
    str
        Plain text (the caller escapes it). The best model is the one with the lowest raw MAE
        (``mae``, never ``mae_corrected``) on the cross-validation rows; with a held-out test
        set, a sentence gives its held-out raw MAE too.
    """
    n_excluded = exclusions["participant_id"].nunique()
    text = (f"{len(manifest)} subjects were listed in the manifest, {len(cohort)} were analysed and "
            f"{n_excluded} {'was' if n_excluded == 1 else 'were'} excluded.")
    cv, test = split_sets(metrics)
    return f"{text} {_best_model_text(cv)}{_heldout_text(cv, test)}"


def _heldout_text(cv: pd.DataFrame, test: pd.DataFrame) -> str:
    if test.empty:
        return ""
    rows = test.set_index("model")
    others = cv[cv["model"] != "dummy"].dropna(subset=["mae"])
    model = others.loc[others["mae"].idxmin(), "model"] if not others.empty else "dummy"
    if model not in rows.index:
        return ""
    text = (f" On the held-out test set ({format_number(rows.loc[model, 'n'], 0)} subjects), {model} had a "
            f"mean absolute error of {format_number(rows.loc[model, 'mae'], 2)} years")
    if model != "dummy" and "dummy" in rows.index:
        text += f" against {format_number(rows.loc['dummy', 'mae'], 2)} years for the dummy"
    return text + "."


def _best_model_text(metrics: pd.DataFrame) -> str:
    # Raw MAE (``mae``): the corrected MAE grows by construction and measures no accuracy.
    if metrics.empty:
        return "No model was evaluated."
    rows = metrics.set_index("model")
    dummy = rows.loc["dummy", "mae"] if "dummy" in rows.index else None
    others = rows.drop(index="dummy", errors="ignore")["mae"].dropna()
    if others.empty:
        return f"Only the dummy baseline was evaluated (MAE {format_number(dummy, 2)} years)."
    best = others.idxmin()
    text = f"The best model was {best}, with a mean absolute error of {format_number(others[best], 2)} years"
    if dummy is None or pd.isna(dummy):
        return text + "; no dummy baseline was evaluated for comparison."
    return text + (f" against {format_number(dummy, 2)} years for the dummy baseline that predicts the "
                   f"training mean age (difference {others[best] - dummy:+.2f} years).")


def render_page(*, title: str, date: str, summary: str, figures: dict[str, str], metrics_html: str,
                exclusions_html: str, n_excluded: int, qc_html: str,
                methods: list[tuple[str, str, list[str]]], held_out: bool = False,
                corrected_html: str = "") -> str:
    """Assemble the report page.

    Parameters
    ----------
    title, date, summary : str
        Plain text (escaped here).
    figures : dict
        Model name -> base64 PNG, embedded as data URIs.
    metrics_html, exclusions_html, qc_html : str
        HTML fragments already escaped by :mod:`brainage.report.tables`; ``metrics_html`` holds
        the raw metrics (the page leads with raw accuracy).
    n_excluded : int
        Number of excluded subjects (heading of the exclusions section).
    methods : list of (str, str, list of str)
        (heading, plain-text paragraph, list items) per section, escaped here.
    held_out : bool
        Whether the figures mark held-out test subjects (their captions then say so).
    corrected_html : str
        The bias-corrected section (:func:`brainage.report.tables.corrected_section`), placed
        after the raw metrics; empty: left out.

    Returns
    -------
    str
        A complete HTML5 document with no external resource.
    """
    esc = html.escape
    return _PAGE.format(
        css=_CSS, title=esc(title), date=esc(date), version=esc(source_version()), summary=esc(summary),
        figures="\n".join(_figure(model, png, held_out) for model, png in figures.items())
        or "<p>No predictions to plot.</p>",
        metrics=metrics_html, corrected=corrected_html, n_excluded=int(n_excluded), exclusions=exclusions_html,
        qc=qc_html,
        methods="\n".join(_methods_section(*section) for section in methods),
    )


def _figure(model: str, png: str, held_out: bool = False) -> str:
    esc = html.escape
    marks = ("; circles = cross-validation (out-of-fold), triangles = held-out test subjects (mean of the "
             "fold models)") if held_out else ""
    return (f'<figure><img src="data:image/png;base64,{png}" alt="{esc(f"Predicted versus true age, {model}")}">'
            f"<figcaption>{esc(model)}: predicted against true age per test subject (left raw, right "
            f"bias-corrected for brain-age delta analyses, titled with the delta-age r, not an accuracy); dashed "
            f"line = identity; colour = site{marks}.</figcaption></figure>")


def _methods_section(heading: str, text: str, items: list[str]) -> str:
    esc = html.escape
    out = f"<h3>{esc(heading)}</h3>\n<p>{esc(text)}</p>"
    if items:
        out += "\n<ul>\n" + "\n".join(f"<li>{esc(item)}</li>" for item in items) + "\n</ul>"
    return out
