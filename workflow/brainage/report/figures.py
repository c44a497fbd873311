"""Predicted-versus-true age scatter plots, one PNG per model, coloured by site, held-out subjects marked."""

from __future__ import annotations

import base64
import io
import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from brainage.report.tables import format_number, split_sets

# Legends with more entries than this hide the panels; the QC table lists every site instead.
_MAX_LEGEND_SITES = 20
# Marker per set: circles for cross-validation subjects, triangles for held-out test subjects.
MARKERS = {"cv": "o", "test": "^"}
HELD_OUT_LABEL = "held-out test (triangles)"


def site_colours(sites: list[str]) -> dict[str, tuple]:
    """Give each site one colour, the same in every model's figure.

    Parameters
    ----------
    sites : list of str
        Site labels (duplicates allowed); colours follow their sorted order.

    Returns
    -------
    dict
        Site label -> RGBA tuple (qualitative ``tab10``, or ``tab20`` for more than 10 sites).
    """
    unique = sorted(set(sites))
    cmap = colormaps["tab10" if len(unique) <= 10 else "tab20"]
    return {site: cmap(i % cmap.N) for i, site in enumerate(unique)}


def model_figure(
    rows: pd.DataFrame, model: str, metrics: pd.Series, colours: dict[str, tuple],
    heldout_metrics: pd.Series | None = None,
) -> bytes:
    """Draw one model's raw and bias-corrected predictions against the true age.

    Parameters
    ----------
    rows : DataFrame
        That model's test predictions with columns ``age``, ``predicted_age``,
        ``predicted_age_corrected`` (years), ``site`` and optionally ``set`` ("cv", or
        "test" for held-out subjects, drawn as triangles; absent: all "cv").
    model : str
        Model name (figure title).
    metrics : Series
        That model's cross-validation metrics row (``mae``, ``r``, ``mae_corrected``, ``r_corrected``).
    colours : dict
        Site -> colour, from :func:`site_colours`.
    heldout_metrics : Series, optional
        That model's held-out metrics row, added to the panel titles.

    Returns
    -------
    bytes
        A PNG image: two panels (raw, corrected) with the identity line.
    """
    # The object-oriented API with an explicit Agg canvas: no pyplot global state, no display needed.
    fig = Figure(figsize=(9.0, 4.2), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, sharex=True, sharey=True)
    lo, hi = _limits(rows)
    sets = rows["set"] if "set" in rows.columns else pd.Series("cv", index=rows.index)
    panels = zip(axes, ("predicted_age", "predicted_age_corrected"), panel_titles(metrics, heldout_metrics))
    for ax, column, title in panels:
        ax.plot([lo, hi], [lo, hi], color="0.4", linestyle="--", linewidth=1, label="identity")
        _scatter_sets(ax, rows.assign(set=sets), column, colours)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("true age (years)")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_aspect("equal")
        ax.grid(True, linewidth=0.3, alpha=0.5)
    axes[0].set_ylabel("predicted age (years)")
    if rows["site"].nunique() <= _MAX_LEGEND_SITES:
        axes[1].legend(title="site", loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    fig.suptitle(model, fontsize=12, fontweight="bold")
    buf = io.BytesIO()
    # No "Software" text chunk: the same predictions give byte-identical PNGs.
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _scatter_sets(ax, rows: pd.DataFrame, column: str, colours: dict[str, tuple]) -> None:
    # Colour = site, marker = set; each site gets one legend entry, the triangles one more.
    labelled = set()
    for (name, site), group in rows.groupby(["set", "site"], sort=True):
        ax.scatter(group["age"], group[column], s=22 if name == "cv" else 30, alpha=0.8,
                   marker=MARKERS.get(name, "o"), color=colours.get(site, "0.5"),
                   edgecolors="white" if name == "cv" else "black", linewidths=0.4 if name == "cv" else 0.6,
                   label="_nolegend_" if site in labelled else str(site))
        labelled.add(site)
    if (rows["set"] == "test").any():
        ax.scatter([], [], marker=MARKERS["test"], color="white", edgecolors="black", label=HELD_OUT_LABEL)


def panel_titles(metrics: pd.Series, heldout: pd.Series | None = None) -> tuple[str, str]:
    """Titles of the raw panel (MAE in years, Pearson r) and of the bias-corrected panel.

    The corrected panel is titled with what corrected predictions are for: the correlation of
    the brain-age delta with age (near 0 when the correction worked), not an accuracy. With
    ``heldout`` (the model's held-out metrics row) each title gets a second line for the
    held-out test set; the first line is the cross-validation.
    """
    def title(label: str, mae: object, r: object) -> str:
        return f"{label}: MAE {format_number(mae, 2)} y, r {format_number(r, 2)}"

    def delta(label: str, r: object) -> str:
        return f"{label}: delta-age r {format_number(r, 2)}"

    raw = title("raw", metrics.get("mae"), metrics.get("r"))
    corrected = delta("bias-corrected, for delta analyses", metrics.get("delta_age_r_corrected"))
    if heldout is None:
        return raw, corrected
    return (raw + "\n" + title("held-out", heldout.get("mae"), heldout.get("r")),
            corrected + "\n" + delta("held-out", heldout.get("delta_age_r_corrected")))


def model_figures(predictions: pd.DataFrame, cohort: pd.DataFrame, metrics: pd.DataFrame) -> dict[str, str]:
    """Render every model's scatter plot as base64 PNG, in the metrics table's model order.

    Parameters
    ----------
    predictions : DataFrame
        Evaluated test predictions (participant_id, model, set, age, predicted_age,
        predicted_age_corrected); held-out subjects (set "test") are drawn as triangles.
    cohort : DataFrame
        Cohort table (participant_id, site): the site of each subject.
    metrics : DataFrame
        One row per model and set.

    Returns
    -------
    dict
        Model name -> base64-encoded PNG (ASCII), for an ``<img src="data:image/png;base64,...">``.
    """
    site = cohort.set_index("participant_id")["site"].astype(str)
    rows = predictions.assign(site=predictions["participant_id"].map(site))
    colours = site_colours(list(site))
    cv, test = split_sets(metrics)
    by_model, heldout = cv.set_index("model"), test.set_index("model")
    figures = {}
    for model in [m for m in cv["model"] if m in set(rows["model"])]:
        extra = heldout.loc[model] if model in heldout.index else None
        png = model_figure(rows[rows["model"] == model], model, by_model.loc[model], colours, extra)
        figures[model] = base64.b64encode(png).decode("ascii")
    return figures


def _limits(rows: pd.DataFrame) -> tuple[float, float]:
    # One square range covering true and both predicted ages, so the identity line is the diagonal.
    values = rows[["age", "predicted_age", "predicted_age_corrected"]].to_numpy(dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = float(values.min()), float(values.max())
    pad = max(1.0, 0.05 * (hi - lo))
    return lo - pad, hi + pad

