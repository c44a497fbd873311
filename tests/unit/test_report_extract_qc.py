"""brainage.report.extract_qc: clean time, FD-DVARS correlations and lost regions from extraction QC records."""

import math
import re

import pandas as pd
import pytest

from brainage import storage
from brainage.errors import InputDataError
from brainage.report.extract_qc import clean_qc, excluded_counts, lost_regions, qc_section
from brainage.report.inputs import read_extract_qc
from brainage.report.tables import qc_table

EXTRACT = {"min_frames": 40, "min_seconds": 120, "min_region_coverage": 0.5, "on_region_loss": "exclude",
           "volume_voxel_size": 8}
LOST_REASON = ("sub-003_desc-brain_mask.nii.gz: regions lost on this brain mask (atlas kmeans100: 2 of 100 regions "
               "below 0.5 coverage: roi_007 (label 7): 20% inside the brain mask; roi_099 (label 99): 12% inside the "
               "brain mask; atlas msdl: 1 of 39 regions below 0.5 coverage: Cereb (label 1): 40% inside the brain "
               "mask); extract.min_region_coverage sets the threshold, extract.on_region_loss: warn keeps such runs")
SHORT_REASON = ("sub-004_desc-confounds_timeseries.tsv: 52 of 200 frames left after censoring (FD > 0.5 mm or std "
                "DVARS > 3) = 104 s of clean data at TR 2 s; need 40 frames (extract.min_frames) and 120 s "
                "(extract.min_seconds)")


def atlases(kmeans=(), msdl=(), kmeans_min=0.9, msdl_min=0.8, kmeans_extra=None):
    """A QC record's ``atlases``: two atlases with their lost region names and lowest coverage."""
    return {
        "kmeans100": {"kind": "labels", "n_regions": 100, "lost_regions": list(kmeans),
                      "min_coverage": kmeans_min} | (kmeans_extra or {}),
        "msdl": {"kind": "maps", "n_regions": 39, "lost_regions": list(msdl), "min_coverage": msdl_min},
    }


def record(pid, status="included", reason=None, **fields):
    return {"participant_id": pid, "stage": "extract", "status": status, "reason": reason} | fields


# Six hand-written records with known answers:
# - roi_007 is lost in 3 runs: sub-002 (the only lost region: its coverage is the atlas minimum, 0.3), sub-003
#   (lost_coverage 0.2) and sub-005 (two regions lost, no per-region coverage: unknown) -> 3 runs, min 20 %.
# - roi_099 once (sub-003, 12 %), roi_050 once (sub-005, unknown), msdl's Cereb once (sub-003, 40 %).
# - Excluded: sub-003 and sub-005 for lost regions, sub-004 for too little clean data.
# - sub-006 is a PCP ROI-series record: no clean time, no atlases.
# - sub-003's FD-DVARS r (0.9) would move the median if excluded runs were counted with the analysed ones.
RECORDS = [
    record("sub-001", seconds_kept=180.0, fd_dvars_r=0.6, fd_dvars_r_clean=0.02, atlases=atlases()),
    record("sub-002", seconds_kept=300.0, fd_dvars_r=0.4, fd_dvars_r_clean=0.06,
           atlases=atlases(kmeans=["roi_007"], kmeans_min=0.3)),
    record("sub-003", "excluded", LOST_REASON, seconds_kept=None, fd_dvars_r=0.9, fd_dvars_r_clean=None,
           atlases=atlases(kmeans=["roi_007", "roi_099"], msdl=["Cereb"], kmeans_min=0.12, msdl_min=0.4,
                           kmeans_extra={"lost_coverage": [0.2, 0.12]})),
    record("sub-004", "excluded", SHORT_REASON, seconds_kept=None, atlases=atlases()),
    record("sub-005", "excluded", "regions lost", atlases=atlases(kmeans=["roi_050", "roi_007"], kmeans_min=0.1)),
    record("sub-006", n_regions=200, n_frames_kept=150),
]
COHORT = pd.DataFrame({"participant_id": ["sub-006", "sub-001", "sub-002"], "site": ["B", "A", "A"],
                       "age": [30.0, 10.0, 20.0], "n_frames_kept": [150, 90, 150], "n_timepoints": [150, 100, 150],
                       "mean_fd": [None, 0.12, 0.2]})


def cells(html):
    return re.findall(r"<td>([^<]*)</td>", html)


def test_lost_regions_counted_over_every_run_with_lowest_coverage():
    table = lost_regions(RECORDS)
    assert table.columns.tolist() == ["atlas", "region", "n_runs", "min_coverage"]
    assert table[["atlas", "region", "n_runs"]].values.tolist() == [
        ["kmeans100", "roi_007", 3], ["kmeans100", "roi_050", 1], ["kmeans100", "roi_099", 1], ["msdl", "Cereb", 1]]
    coverage = table["min_coverage"].tolist()
    assert coverage[0] == 0.2 and math.isnan(coverage[1]) and coverage[2:] == [0.12, 0.4]


def test_no_lost_region_gives_an_empty_table():
    assert lost_regions([record("sub-1", atlases=atlases())]).empty
    assert lost_regions([record("sub-1")]).empty


def test_excluded_runs_are_counted_by_cause():
    assert excluded_counts(RECORDS) == {"lost_regions": 2, "clean_time": 1}


def test_clean_qc_has_one_row_per_record_and_nan_where_unknown():
    clean = clean_qc(RECORDS)
    assert clean["participant_id"].tolist() == [f"sub-00{i}" for i in range(1, 7)]
    assert clean["seconds_kept"].tolist()[:2] == [180.0, 300.0] and clean["seconds_kept"].isna().sum() == 4
    assert clean.loc[2, "fd_dvars_r"] == 0.9 and math.isnan(clean.loc[2, "fd_dvars_r_clean"])


def test_qc_table_gains_clean_time_and_fd_dvars_columns():
    table = qc_table(COHORT, clean_qc(RECORDS))
    headers = re.findall(r"<th>([^<]*)</th>", table)
    assert headers[-3:] == ["clean data (s)", "FD-DVARS r before", "FD-DVARS r after"]
    assert cells(table) == ["sub-001", "A", "10.0", "90 / 100", "0.120", "180", "0.60", "0.02",
                            "sub-002", "A", "20.0", "150 / 150", "0.200", "300", "0.40", "0.06",
                            "sub-006", "B", "30.0", "150 / 150", "n/a", "n/a", "n/a", "n/a"]


def test_qc_section_summarises_and_lists_lost_regions():
    html = qc_section(COHORT, RECORDS, EXTRACT)
    # Analysed runs only (sub-001, sub-002; sub-006 has no clean time): median of 180 and 300 s.
    assert "Clean data per analysed run: median 240 s (range 180-300 s)." in html
    assert ("median r 0.50 before denoising (fMRIPrep&#x27;s DVARS) and 0.04 after (DVARS of the cleaned 8 mm "
            "volumes over consecutive kept frames)") in html
    assert ("4 regions of 2 atlases fell below 50% coverage (extract.min_region_coverage) in at least one of the 6 "
            "extracted runs; 2 runs were excluded for them. 1 run was excluded for too little clean data "
            "(extract.min_seconds 120 s, extract.min_frames 40; reasons under Excluded subjects).") in html
    lost = html[html.index('class="dataframe lost-regions"'):]
    assert re.findall(r"<th>([^<]*)</th>", lost) == ["atlas", "region", "runs lost", "min coverage (%)"]
    assert cells(lost) == ["kmeans100", "roi_007", "3", "20", "kmeans100", "roi_050", "1", "n/a",
                           "kmeans100", "roi_099", "1", "12", "msdl", "Cereb", "1", "40"]


def test_qc_section_without_lost_regions_or_records():
    clean_runs = [r for r in RECORDS if r["participant_id"] in ("sub-001", "sub-004")]
    html = qc_section(COHORT, clean_runs, EXTRACT | {"on_region_loss": "warn", "min_region_coverage": 0.25})
    assert ("No region fell below 25% coverage (extract.min_region_coverage) in any of the 2 extracted runs. 1 run "
            "was excluded for too little clean data") in html
    assert "lost-regions" not in html
    warned = qc_section(COHORT, RECORDS[:2], EXTRACT | {"on_region_loss": "warn"})
    assert "1 region of 1 atlas fell below 50% coverage" in warned
    assert "runs were kept with a warning (extract.on_region_loss warn). 0 runs were excluded" in warned
    assert qc_section(COHORT, [], EXTRACT) == qc_table(COHORT)  # no records: the table as before
    pcp = qc_section(COHORT, [RECORDS[-1]], EXTRACT)
    assert "No analysed run records its clean time (e.g. ROI series used as distributed)." in pcp


def test_extract_qc_records_are_read_and_checked(tmp_path):
    storage.write_json(tmp_path / "a.json", record("007", seconds_kept=100.0))
    assert read_extract_qc([tmp_path / "a.json"])[0]["participant_id"] == "sub-007"
    storage.write_json(tmp_path / "b.json", {"participant_id": "sub-1"})
    with pytest.raises(InputDataError, match=r"b\.json: extraction QC record lacks \['status'\]"):
        read_extract_qc([tmp_path / "b.json"])
    storage.write_json(tmp_path / "c.json", [1])
    with pytest.raises(InputDataError, match=r"c\.json: expected a JSON object \(extraction QC record\), found list"):
        read_extract_qc([tmp_path / "c.json"])
