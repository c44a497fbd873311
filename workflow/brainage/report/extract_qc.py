"""Extraction QC view: clean time and FD-DVARS coupling per run, regions lost per atlas, from the QC records."""

from __future__ import annotations

import html

import pandas as pd

from brainage.report.extraction import short_number
from brainage.report.tables import format_number, html_table, qc_table

CLEAN_COLUMNS = ("participant_id", "seconds_kept", "fd_dvars_r", "fd_dvars_r_clean")
LOST_COLUMNS = ("atlas", "region", "n_runs", "min_coverage")


def clean_qc(records: list[dict]) -> pd.DataFrame:
    """Per run: seconds of clean data kept and the FD-DVARS correlation before and after denoising.

    Parameters
    ----------
    records : list of dict
        Extraction QC records (``participant_id``, ``seconds_kept`` in s, ``fd_dvars_r``,
        ``fd_dvars_r_clean``); a missing key (e.g. PCP ROI series, or a run excluded before
        censoring) gives NaN.

    Returns
    -------
    DataFrame
        :data:`CLEAN_COLUMNS`, one row per record, floats.
    """
    rows = [[r["participant_id"], *(r.get(key) for key in CLEAN_COLUMNS[1:])] for r in records]
    frame = pd.DataFrame(rows, columns=list(CLEAN_COLUMNS))
    return frame.astype({key: "float64" for key in CLEAN_COLUMNS[1:]})


def _lost_coverages(entry: dict) -> list[float | None]:
    """Coverage of each lost region of one atlas in one run, where the record tells it.

    ``lost_coverage`` (one share per lost region) when the record has it; else, with a single
    lost region, the atlas's ``min_coverage`` is that region's coverage (a lost region is the
    least covered); else unknown.
    """
    lost = entry.get("lost_regions") or []
    per_region = entry.get("lost_coverage")
    if isinstance(per_region, list) and len(per_region) == len(lost):
        return per_region
    if len(lost) == 1 and entry.get("min_coverage") is not None:
        return [entry["min_coverage"]]
    return [None] * len(lost)


def lost_regions(records: list[dict]) -> pd.DataFrame:
    """Regions below the coverage threshold, per atlas, counted over every extracted run.

    Parameters
    ----------
    records : list of dict
        Extraction QC records, included and excluded runs alike (a lost region is what
        excludes a run under ``on_region_loss: exclude``); ``atlases`` maps an atlas id to
        ``lost_regions`` (names) and ``min_coverage`` / ``lost_coverage`` (shares 0-1).

    Returns
    -------
    DataFrame
        :data:`LOST_COLUMNS`: atlas id, region name, runs where it was lost, its lowest
        coverage over those runs (NaN where no record gives it). Atlases in the order the
        records list them, then regions by runs (most first) and name.
    """
    counts: dict[tuple[str, str], list] = {}
    order: dict[str, int] = {}
    for record in records:
        for atlas, entry in (record.get("atlases") or {}).items():
            order.setdefault(atlas, len(order))
            for region, coverage in zip(entry.get("lost_regions") or [], _lost_coverages(entry), strict=True):
                count = counts.setdefault((atlas, region), [0, []])
                count[0] += 1
                count[1] += [] if coverage is None else [float(coverage)]
    rows = [(atlas, region, n, min(cov) if cov else float("nan")) for (atlas, region), (n, cov) in counts.items()]
    frame = pd.DataFrame(rows, columns=list(LOST_COLUMNS)).astype({"n_runs": "int64", "min_coverage": "float64"})
    frame["_order"] = frame["atlas"].map(order)
    frame = frame.sort_values(["_order", "n_runs", "region"], ascending=[True, False, True], kind="stable")
    return frame.drop(columns="_order").reset_index(drop=True)


def excluded_counts(records: list[dict]) -> dict[str, int]:
    """Runs excluded at extraction for lost regions and for too little clean data.

    Lost regions are read from the record's ``atlases``; too little clean data from the
    reason, which names ``extract.min_seconds`` (the message of the clean-time check).
    """
    excluded = [r for r in records if r["status"] == "excluded"]
    lost = sum(any((e.get("lost_regions") or []) for e in (r.get("atlases") or {}).values()) for r in excluded)
    short = sum("extract.min_seconds" in str(r.get("reason") or "") for r in excluded)
    return {"lost_regions": int(lost), "clean_time": int(short)}


def clean_summary(clean: pd.DataFrame, extract: dict) -> str:
    """One paragraph on the analysed runs' clean time and FD-DVARS correlations (plain text).

    Parameters
    ----------
    clean : DataFrame
        :func:`clean_qc` rows of the analysed runs.
    extract : dict
        The ``extract`` section (``volume_voxel_size`` in mm).
    """
    seconds = clean["seconds_kept"].dropna()
    if seconds.empty:
        return "No analysed run records its clean time (e.g. ROI series used as distributed)."
    text = (f"Clean data per analysed run: median {seconds.median():.0f} s (range {seconds.min():.0f}-"
            f"{seconds.max():.0f} s).")
    before, after = clean["fd_dvars_r"].dropna(), clean["fd_dvars_r_clean"].dropna()
    if not before.empty or not after.empty:
        text += (f" Correlation of framewise displacement with DVARS across frames: median r "
                 f"{format_number(before.median() if len(before) else None, 2)} before denoising (fMRIPrep's "
                 f"DVARS) and {format_number(after.median() if len(after) else None, 2)} after (DVARS of the "
                 f"cleaned {extract['volume_voxel_size']} mm volumes over consecutive kept frames); near zero "
                 f"after denoising means little motion-locked signal is left (Power et al. 2012).")
    return text


def lost_summary(lost: pd.DataFrame, records: list[dict], extract: dict) -> str:
    """One paragraph on the regions lost, the threshold and what they did to the runs (plain text)."""
    counts = excluded_counts(records)
    short = (f" {counts['clean_time']} run{'s were' if counts['clean_time'] != 1 else ' was'} excluded for too "
             f"little clean data (extract.min_seconds {short_number(extract['min_seconds'])} s, extract.min_frames "
             f"{extract['min_frames']}; reasons under Excluded subjects).")
    threshold = f"{short_number(100 * extract['min_region_coverage'])}% coverage (extract.min_region_coverage)"
    if lost.empty:
        return f"No region fell below {threshold} in any of the {len(records)} extracted runs.{short}"
    if extract["on_region_loss"] == "exclude":
        effect = f"{counts['lost_regions']} run{'s were' if counts['lost_regions'] != 1 else ' was'} excluded for them"
    else:
        effect = "runs were kept with a warning (extract.on_region_loss warn)"
    n_atlases = lost["atlas"].nunique()
    return (f"{len(lost)} region{'s' if len(lost) != 1 else ''} of {n_atlases} atlas{'es' if n_atlases != 1 else ''} "
            f"fell below {threshold} in at least one of the {len(records)} extracted runs; {effect}.{short}")


def lost_table(lost: pd.DataFrame) -> str:
    """Render the lost regions (atlas, region, runs, lowest coverage in %) as an HTML table."""
    shown = pd.DataFrame({
        "atlas": lost["atlas"].astype(str), "region": lost["region"].astype(str),
        "runs lost": lost["n_runs"].astype(str),
        "min coverage (%)": [format_number(100 * v if pd.notna(v) else None, 0) for v in lost["min_coverage"]],
    })
    return html_table(shown, "lost-regions")


def qc_section(cohort: pd.DataFrame, records: list[dict], extract: dict) -> str:
    """The report's QC section: summaries, the per-subject table and the lost-regions table.

    Parameters
    ----------
    cohort : DataFrame
        Analysed subjects (see :func:`brainage.report.tables.qc_table`).
    records : list of dict
        Extraction QC records (:func:`brainage.report.inputs.read_extract_qc`); empty: the
        per-subject table alone, as before extraction QC was read.
    extract : dict
        The ``extract`` config section.

    Returns
    -------
    str
        An HTML fragment, every value escaped.
    """
    if not records:
        return qc_table(cohort)
    clean = clean_qc(records)
    analysed = clean[clean["participant_id"].isin(set(cohort["participant_id"].astype(str)))]
    lost = lost_regions(records)
    parts = [f"<p>{html.escape(clean_summary(analysed, extract))}</p>", qc_table(cohort, analysed),
             "<h3>Regions lost on the brain masks</h3>", f"<p>{html.escape(lost_summary(lost, records, extract))}</p>"]
    if not lost.empty:
        parts.append(lost_table(lost))
    return "\n".join(parts)
