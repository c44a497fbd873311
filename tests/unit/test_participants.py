"""brainage.participants: subject ids, the manifest, and row- and file-level exclusions."""

import json
import logging

import pandas as pd
import pytest

from brainage.errors import ConfigError, InputDataError
from brainage.participants import build_manifest, read_participant_ids
from brainage.participants.__main__ import main
from brainage.participants.discover import Selection
from fmriprep_layouts import SPACE, write_run

HEADER = "participant_id\tage\tsex\tsite\tdx_group\n"
REST = Selection(task="rest", space=SPACE)
SELECTION_JSON = json.dumps({"task": "rest", "space": SPACE})


def _tsv(tmp_path, body, header=HEADER, name="participants.tsv"):
    path = tmp_path / name
    path.write_text(header + body)
    return path


def _derivatives(tmp_path, labels):
    """An fMRIPrep derivatives folder under tmp_path with one complete run for each label."""
    for label in labels:
        write_run(tmp_path / "deriv", label)
    return tmp_path / "deriv"


def _read(path):
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)


def test_read_participant_ids_accepts_ids_with_and_without_prefix(tmp_path):
    path = _tsv(tmp_path, "sub-01\t20\tM\tA\tASD\n02\t30\tF\tA\tTD\nsub-abc3\t40\tF\tB\tTD\n")
    assert read_participant_ids(path) == ["01", "02", "abc3"]


def test_read_participant_ids_on_the_real_abide_table(shared_data):
    ids = read_participant_ids(shared_data / "abide1_pcp_cpac_filtglobal_cc200" / "participants.tsv")
    assert len(ids) == 831
    assert ids[0] == "0050003"
    assert not any(x.startswith("sub-") for x in ids)


@pytest.mark.parametrize(
    ("body", "header", "match"),
    [
        ("sub-01\t20\tM\tA\tASD\n01\t30\tF\tA\tTD\n", HEADER, r"duplicated participant_id: sub-01"),
        ("01\t20\tM\tA\tASD\n", "subject\tage\tsex\tsite\tdx_group\n", r"no participant_id column.*subject"),
        ("sub-0_1\t20\tM\tA\tASD\n", HEADER, r"'sub-0_1' in row 1 is not a BIDS label"),
        ("sub-01\t20\tM\tA\tASD\nn/a\t30\tF\tA\tTD\n", HEADER, r"row 2 has no participant_id"),
    ],
)
def test_read_participant_ids_errors_name_the_file_and_reason(tmp_path, body, header, match):
    path = _tsv(tmp_path, body, header=header)
    with pytest.raises(InputDataError, match=match) as err:
        read_participant_ids(path)
    assert str(path) in str(err.value)


def test_read_participant_ids_missing_file(tmp_path):
    with pytest.raises(InputDataError, match=r"nope\.tsv: file not found"):
        read_participant_ids(tmp_path / "nope.tsv")


def test_manifest_normalises_rows_and_keeps_extra_columns(tmp_path, caplog):
    body = "sub-01\t20.5\tmale\tsiteA\tASD\n02\t30\tF\tsiteB\tn/a\n03\t7\tf\tsiteA\tTD\n04\t0\t1\tsiteB\tTD\n"
    path = _tsv(tmp_path, body)
    out, excl = tmp_path / "out" / "manifest.tsv", tmp_path / "out" / "excl.tsv"
    with caplog.at_level(logging.WARNING, logger="brainage.participants"):
        build_manifest(path, "abide", _derivatives(tmp_path, ["01", "02", "03", "04"]), REST, out, excl)
    assert "sex values ['1'] are not M/F/male/female; written as n/a" in caplog.text

    manifest = _read(out)
    assert list(manifest.columns) == ["participant_id", "dataset", "site", "age", "sex", "dx_group"]
    assert manifest["participant_id"].tolist() == ["sub-01", "sub-02", "sub-03", "sub-04"]
    assert manifest["dataset"].tolist() == ["abide"] * 4
    assert manifest["site"].tolist() == ["siteA", "siteB", "siteA", "siteB"]
    assert [float(a) for a in manifest["age"]] == [20.5, 30.0, 7.0, 0.0]
    # Numeric sex codes are not guessed (their meaning differs between datasets).
    assert manifest["sex"].tolist() == ["M", "F", "F", "n/a"]
    assert manifest["dx_group"].tolist() == ["ASD", "n/a", "TD", "TD"]
    exclusions = _read(excl)
    assert list(exclusions.columns) == ["participant_id", "stage", "reason"]
    assert exclusions.empty


def test_manifest_excludes_each_bad_row_type_and_keeps_the_rest(tmp_path, caplog):
    body = (
        "sub-01\t20\tM\tA\tASD\n"  # kept
        "sub-02\tn/a\tM\tA\tASD\n"  # missing age
        "sub-03\tabc\tF\tA\tTD\n"  # not a number
        "sub-04\t-3\tF\tB\tTD\n"  # negative
        "sub-05\t121\tM\tB\tTD\n"  # > 120
        "sub-06\t\tM\tB\tTD\n"  # empty cell = missing
        "sub-07\t40\tM\tB\tTD\n"  # no BOLD
        "sub-08\t120\tF\tB\tTD\n"  # kept (boundary)
    )
    path = _tsv(tmp_path, body)
    template = _derivatives(tmp_path, ["01", "02", "03", "04", "05", "06", "08"])
    out, excl = tmp_path / "manifest.tsv", tmp_path / "excl.tsv"
    with caplog.at_level(logging.WARNING, logger="brainage.participants"):
        build_manifest(path, "demo", template, REST, out, excl)

    assert _read(out)["participant_id"].tolist() == ["sub-01", "sub-08"]
    exclusions = _read(excl)
    assert exclusions["participant_id"].tolist() == ["sub-02", "sub-03", "sub-04", "sub-05", "sub-06", "sub-07"]
    assert set(exclusions["stage"]) == {"participants"}
    reasons = exclusions["reason"].tolist()
    assert reasons[0] == f"no age in {path} row 2"
    assert reasons[1] == f"age 'abc' is not a number in {path} row 3"
    assert reasons[2] == f"age -3 is outside [0, 120] years in {path} row 4"
    assert reasons[3] == f"age 121 is outside [0, 120] years in {path} row 5"
    assert reasons[4] == f"no age in {path} row 6"
    assert reasons[5].startswith("no preprocessed BOLD: nothing named sub-07[_ses-*]_task-rest") and str(template / "sub-07") in reasons[5]
    # One log line per exclusion.
    assert sum("excluding sub-" in r.getMessage() for r in caplog.records) == 6


def test_manifest_on_the_real_abide_table(shared_data, tmp_path):
    participants = shared_data / "abide1_pcp_cpac_filtglobal_cc200" / "participants.tsv"
    template = _derivatives(tmp_path, ["0050003", "0050004", "0050005"])
    out, excl = tmp_path / "manifest.tsv", tmp_path / "excl.tsv"
    build_manifest(participants, "abide", template, REST, out, excl)
    manifest = _read(out)
    assert manifest["participant_id"].tolist() == ["sub-0050003", "sub-0050004", "sub-0050005"]
    assert [float(a) for a in manifest["age"]] == [24.45, 19.09, 13.73]
    assert manifest["sex"].tolist() == ["M", "M", "F"]
    assert "func_mean_fd" in manifest.columns
    exclusions = _read(excl)
    assert len(exclusions) == 831 - 3
    assert exclusions["reason"].str.startswith("no preprocessed BOLD: ").all()


@pytest.mark.parametrize(
    ("body", "header", "match"),
    [
        ("01\t20\n", "participant_id\tage\n", r"participants table lacks columns \['sex', 'site'\]"),
        ("", HEADER, r"no participants \(the table has a header but no rows\)"),
        ("01\t20\tM\tA\tASD\nsub-01\t21\tM\tA\tASD\n", HEADER, r"duplicated participant_id: sub-01"),
        ("01\tn/a\tM\tA\tASD\n02\t-1\tM\tA\tASD\n", HEADER, r"all 2 participants were excluded"),
    ],
)
def test_manifest_file_level_errors_name_the_file(tmp_path, body, header, match):
    path = _tsv(tmp_path, body, header=header)
    with pytest.raises(InputDataError, match=match) as err:
        build_manifest(path, "demo", _derivatives(tmp_path, ["01", "02"]), REST, tmp_path / "m.tsv", tmp_path / "e.tsv")
    assert str(path) in str(err.value)
    assert not (tmp_path / "m.tsv").exists()


def test_cli_manifest_writes_outputs_and_reports_errors(tmp_path):
    path = _tsv(tmp_path, "01\t20\tM\tA\tASD\n02\t30\tF\tA\tTD\n")
    template = _derivatives(tmp_path, ["01"])
    args = ["manifest", "--participants", str(path), "--dataset", "demo", "--derivatives", str(template), "--selection", SELECTION_JSON,
            "--out", str(tmp_path / "m.tsv"), "--exclusions-out", str(tmp_path / "e.tsv")]
    assert main(args) == 0
    assert _read(tmp_path / "m.tsv")["participant_id"].tolist() == ["sub-01"]
    assert _read(tmp_path / "e.tsv")["participant_id"].tolist() == ["sub-02"]

    bad = _tsv(tmp_path, "01\t20\n", header="participant_id\tage\n", name="bad.tsv")
    assert main([*args[:1], "--participants", str(bad), *args[3:]]) == 1


def test_manifest_leaves_out_the_subjects_the_config_excludes_with_their_reason(tmp_path):
    path = _tsv(tmp_path, "01\t20\tM\tA\tASD\n02\t30\tF\tA\tTD\n03\t40\tF\tB\tTD\n")
    # sub-02 has no BOLD at all: a user exclusion is recorded with the user's reason, not "no BOLD"
    template = _derivatives(tmp_path, ["01", "03"])
    build_manifest(path, "demo", template, REST, tmp_path / "m.tsv", tmp_path / "e.tsv",
                   exclude={"sub-02": "scanner artefact", "03": "withdrew consent"})
    assert _read(tmp_path / "m.tsv")["participant_id"].tolist() == ["sub-01"]
    exclusions = _read(tmp_path / "e.tsv")
    assert exclusions.values.tolist() == [
        ["sub-02", "participants", "excluded in the config (inputs.exclude): scanner artefact"],
        ["sub-03", "participants", "excluded in the config (inputs.exclude): withdrew consent"],
    ]
    with pytest.raises(ConfigError, match=r"inputs.exclude: sub-09 not in .*participants\.tsv"):
        build_manifest(path, "demo", template, REST, tmp_path / "m.tsv", tmp_path / "e.tsv", exclude={"sub-09": "x"})


def test_cli_manifest_takes_the_exclusions_as_json(tmp_path):
    path = _tsv(tmp_path, "01\t20\tM\tA\tASD\n02\t30\tF\tA\tTD\n")
    template = _derivatives(tmp_path, ["01", "02"])
    args = ["manifest", "--participants", str(path), "--dataset", "demo", "--derivatives", str(template), "--selection", SELECTION_JSON,
            "--exclude", '{"sub-01": "motion in the scanner log"}',
            "--out", str(tmp_path / "m.tsv"), "--exclusions-out", str(tmp_path / "e.tsv")]
    assert main(args) == 0
    assert _read(tmp_path / "m.tsv")["participant_id"].tolist() == ["sub-02"]
    assert _read(tmp_path / "e.tsv")["reason"].tolist() == ["excluded in the config (inputs.exclude): motion in the scanner log"]
