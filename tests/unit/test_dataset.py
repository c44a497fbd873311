"""brainage.dataset: cohort from manifest + extraction QC, folds, and every exclusion kept."""

import json

import numpy as np
import pandas as pd
import pytest

from brainage import storage
from brainage.dataset import build_cohort
from brainage.dataset.__main__ import main
from brainage.errors import ConfigError, InputDataError
from brainage.splits import make_folds

PARAMS = {"n_folds": 3, "group_by_site": False, "test_sites": [], "test_datasets": []}


# Motion QC switched off: these tests are about the extraction QC and the folds.
QC_OFF = {"max_mean_fd": None, "high_motion_fd": 0.2, "max_high_motion_fraction": None, "max_mean_std_dvars": None}


def _manifest(tmp_path, n=12):
    df = pd.DataFrame({
        "participant_id": [f"sub-{i:02d}" for i in range(1, n + 1)],
        "dataset": "demo",
        "site": ["A", "B", "C"] * (n // 3),
        "age": np.linspace(10.0, 65.0, n),
        "sex": ["M", "F"] * (n // 2),
        "dx_group": "TD",
    })
    storage.write_tsv(tmp_path / "participants.tsv", df)
    excl = pd.DataFrame({"participant_id": ["sub-99"], "stage": ["participants"], "reason": ["no age in x row 3"]})
    storage.write_tsv(tmp_path / "participants_exclusions.tsv", excl)
    return tmp_path / "participants.tsv", tmp_path / "participants_exclusions.tsv"


def _qc(tmp_path, pid, status="included", reason=None, n_kept=90, mean_fd=0.12, **extra):
    record = {"participant_id": pid, "stage": "extract", "status": status, "reason": reason,
              "n_frames_kept": n_kept, "n_timepoints": 100, "mean_fd": mean_fd, "max_fd": None,
              "tr": 2.0, "n_regions": 100, **extra}
    path = tmp_path / "qc" / f"{pid}_qc.json"
    storage.write_json(path, record)
    return path


def _outputs(tmp_path):
    out = tmp_path / "out"
    return {"cohort_out": out / "cohort.parquet", "splits_out": out / "splits.tsv",
            "exclusions_out": out / "exclusions.tsv"}


def _qc_all(tmp_path, n=12):
    return [_qc(tmp_path, f"sub-{i:02d}", mean_fd=0.01 * i) for i in range(1, n + 1)]


def test_cohort_keeps_qc_included_subjects_and_records_every_exclusion(tmp_path):
    manifest, excl = _manifest(tmp_path)
    qc = _qc_all(tmp_path)
    qc[3] = _qc(tmp_path, "sub-04", status="excluded", reason="only 12 frames left after censoring", n_kept=12)
    qc.pop(6)  # sub-07: extraction produced nothing
    outs = _outputs(tmp_path)
    build_cohort(manifest, excl, qc, PARAMS, 42, qc_params=QC_OFF, **outs)

    cohort = storage.read_table(outs["cohort_out"], kind="cohort")
    assert list(cohort.columns) == [
        "participant_id", "dataset", "site", "age", "sex", "n_timepoints", "n_frames_kept", "mean_fd"]
    expected_ids = [f"sub-{i:02d}" for i in range(1, 13) if i not in (4, 7)]
    assert cohort["participant_id"].tolist() == expected_ids
    np.testing.assert_allclose(cohort["age"], np.delete(np.linspace(10.0, 65.0, 12), [3, 6]))
    np.testing.assert_allclose(cohort["mean_fd"], [0.01 * i for i in range(1, 13) if i not in (4, 7)])
    assert (cohort["n_frames_kept"] == 90).all() and (cohort["n_timepoints"] == 100).all()
    meta = cohort.attrs["brainage"]
    assert meta["params"] == PARAMS and meta["seed"] == 42
    assert meta["n_subjects"] == 10 and meta["n_excluded"] == 3

    splits = pd.read_csv(outs["splits_out"], sep="\t")
    assert list(splits.columns) == ["participant_id", "fold", "set"]
    assert splits["participant_id"].tolist() == expected_ids
    assert sorted(splits["fold"].unique().tolist()) == [0, 1, 2]
    assert (splits["set"] == "cv").all() and meta["n_test"] == 0

    exclusions = pd.read_csv(outs["exclusions_out"], sep="\t")
    assert exclusions.values.tolist() == [
        ["sub-99", "participants", "no age in x row 3"],
        ["sub-04", "extract", "only 12 frames left after censoring"],
        ["sub-07", "dataset", "no extraction output"],
    ]


def test_folds_follow_params_and_seed(tmp_path):
    manifest, excl = _manifest(tmp_path)
    qc = _qc_all(tmp_path)
    outs = _outputs(tmp_path)
    build_cohort(manifest, excl, qc, {**PARAMS, "group_by_site": True}, 1, qc_params=QC_OFF, **outs)
    splits = pd.read_csv(outs["splits_out"], sep="\t")
    sites = np.array(["A", "B", "C"] * 4)
    # Three sites, three folds, site-grouped: each fold is one site.
    for site in "ABC":
        assert splits.loc[sites == site, "fold"].nunique() == 1
    assert splits["fold"].nunique() == 3


def test_qc_record_of_a_subject_outside_the_manifest_is_ignored(tmp_path):
    manifest, excl = _manifest(tmp_path)
    qc = [*_qc_all(tmp_path), _qc(tmp_path, "sub-99")]
    outs = _outputs(tmp_path)
    build_cohort(manifest, excl, qc, PARAMS, 0, qc_params=QC_OFF, **outs)
    assert "sub-99" not in storage.read_table(outs["cohort_out"])["participant_id"].tolist()


def test_cli_build(tmp_path):
    manifest, excl = _manifest(tmp_path)
    qc = _qc_all(tmp_path)
    outs = _outputs(tmp_path)
    args = ["build", "--manifest", str(manifest), "--participant-exclusions", str(excl),
            "--qc", *map(str, qc), "--params", json.dumps({**PARAMS, "n_folds": 4}), "--seed", "3",
            "--qc-params", json.dumps(QC_OFF),
            "--cohort-out", str(outs["cohort_out"]), "--splits-out", str(outs["splits_out"]),
            "--exclusions-out", str(outs["exclusions_out"])]
    assert main(args) == 0
    assert pd.read_csv(outs["splits_out"], sep="\t")["fold"].nunique() == 4
    args[args.index("--params") + 1] = json.dumps({**PARAMS, "n_folds": 13})
    assert main(args) == 1
    args[args.index("--params") + 1] = json.dumps({**PARAMS, "test_sites": ["A"]})
    assert main(args) == 0
    splits = pd.read_csv(outs["splits_out"], sep="\t")
    assert splits.loc[splits["set"] == "test", "participant_id"].tolist() == ["sub-01", "sub-04", "sub-07", "sub-10"]


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"status": "maybe"}, InputDataError, r"sub-01_qc\.json: QC status 'maybe', expected one of"),
        ({"drop": "mean_fd"}, InputDataError, r"sub-01_qc\.json: QC record lacks keys \['mean_fd'\]"),
    ],
)
def test_malformed_qc_records(tmp_path, change, error, match):
    manifest, excl = _manifest(tmp_path)
    qc = _qc_all(tmp_path)
    record = storage.read_json(qc[0])
    record.update({k: v for k, v in change.items() if k != "drop"})
    record.pop(change.get("drop", "none"), None)
    storage.write_json(qc[0], record)
    with pytest.raises(error, match=match):
        build_cohort(manifest, excl, qc, PARAMS, 0, qc_params=QC_OFF, **_outputs(tmp_path))


def test_two_qc_records_for_one_subject(tmp_path):
    manifest, excl = _manifest(tmp_path)
    qc = _qc_all(tmp_path)
    storage.write_json(tmp_path / "other.json", storage.read_json(qc[0]))
    with pytest.raises(InputDataError, match=r"other\.json: second QC record for sub-01 \(first in .*sub-01_qc\.json\)"):
        build_cohort(manifest, excl, [*qc, tmp_path / "other.json"], PARAMS, 0, qc_params=QC_OFF, **_outputs(tmp_path))


def test_malformed_manifest_and_exclusions(tmp_path):
    manifest, excl = _manifest(tmp_path)
    qc = _qc_all(tmp_path)
    table = pd.read_csv(manifest, sep="\t")
    storage.write_tsv(tmp_path / "no_site.tsv", table.drop(columns="site"))
    with pytest.raises(InputDataError, match=r"no_site\.tsv: manifest lacks columns \['site'\]"):
        build_cohort(tmp_path / "no_site.tsv", excl, qc, PARAMS, 0, qc_params=QC_OFF, **_outputs(tmp_path))
    storage.write_tsv(tmp_path / "bad_age.tsv", table.assign(age=["x"] + [30.0] * 11))
    with pytest.raises(InputDataError, match=r"bad_age\.tsv: manifest ages missing or not numbers for \['sub-01'\]"):
        build_cohort(tmp_path / "bad_age.tsv", excl, qc, PARAMS, 0, qc_params=QC_OFF, **_outputs(tmp_path))
    storage.write_tsv(tmp_path / "bad_excl.tsv", pd.DataFrame({"participant_id": ["sub-99"]}))
    with pytest.raises(InputDataError, match=r"bad_excl\.tsv: exclusions table lacks columns \['stage', 'reason'\]"):
        build_cohort(manifest, tmp_path / "bad_excl.tsv", qc, PARAMS, 0, qc_params=QC_OFF, **_outputs(tmp_path))


@pytest.mark.parametrize(
    ("params", "error", "match"),
    [
        ({"n_folds": 3}, ConfigError, r"missing \['group_by_site', 'test_datasets', 'test_sites'\]"),
        ({**PARAMS, "shuffle": True}, ConfigError, r"unknown \['shuffle'\]"),
        ({**PARAMS, "n_folds": 11}, ValueError, r"dataset\.n_folds=11 but only 10 subjects"),
        ({**PARAMS, "n_folds": 4, "group_by_site": True}, ValueError, r"dataset\.n_folds=4, but only 3 sites"),
        ({**PARAMS, "test_sites": "A"}, ConfigError, r"dataset\.test_sites: expected a list of names, found 'A'"),
        ({**PARAMS, "test_sites": ["A", "Q"]}, ConfigError,
         r"dataset\.test_sites: no cohort subject has the site\(s\) \['Q'\]; the cohort's sites are \['A', 'B', 'C'\]"),
        ({**PARAMS, "test_datasets": ["abide"]}, ConfigError,
         r"dataset\.test_datasets: no cohort subject has the dataset\(s\) \['abide'\]; .* are \['demo'\]"),
        ({**PARAMS, "test_datasets": ["demo"]}, ValueError, r"hold out all 10 cohort subjects"),
    ],
)
def test_params_errors(tmp_path, params, error, match):
    manifest, excl = _manifest(tmp_path)
    qc = _qc_all(tmp_path)[:10]  # sub-11 and sub-12 have no extraction output
    with pytest.raises(error, match=match):
        build_cohort(manifest, excl, qc, params, 0, qc_params=QC_OFF, **_outputs(tmp_path))


def test_held_out_sites_and_datasets_form_the_test_set(tmp_path, caplog):
    manifest, excl = _manifest(tmp_path)
    table = pd.read_csv(manifest, sep="\t")
    table.loc[table["participant_id"].isin(["sub-11", "sub-12"]), "dataset"] = "ext"
    storage.write_tsv(manifest, table)
    outs = _outputs(tmp_path)
    params = {**PARAMS, "n_folds": 2, "test_sites": ["C"], "test_datasets": ["ext"]}
    with caplog.at_level("INFO", logger="brainage"):
        build_cohort(manifest, excl, _qc_all(tmp_path), params, 5, qc_params=QC_OFF, **outs)
    splits = pd.read_csv(outs["splits_out"], sep="\t").set_index("participant_id")
    # Site C: sub-03, 06, 09, 12; dataset ext: sub-11, sub-12.
    held = ["sub-03", "sub-06", "sub-09", "sub-11", "sub-12"]
    assert splits.index[splits["set"] == "test"].tolist() == held
    assert (splits.loc[held, "fold"] == -1).all()
    cv = splits[splits["set"] == "cv"]
    assert sorted(cv["fold"].unique().tolist()) == [0, 1]
    # The cv folds are those made on the cv subjects alone (held-out subjects shape nothing).
    ages = table.set_index("participant_id").loc[cv.index, "age"].to_numpy()
    sites = table.set_index("participant_id").loc[cv.index, "site"].to_numpy()
    np.testing.assert_array_equal(cv["fold"], make_folds(ages, sites, 2, False, 5))
    cohort = storage.read_table(outs["cohort_out"])
    assert len(cohort) == 12 and cohort.attrs["brainage"]["n_test"] == 5
    assert cohort.attrs["brainage"]["params"]["test_sites"] == ["C"]
    assert "12 subjects, 7 in 2 folds and 5 held out" in caplog.text


def test_held_out_needs_enough_cv_subjects(tmp_path):
    manifest, excl = _manifest(tmp_path)
    with pytest.raises(ValueError, match=r"n_folds=5 but only 4 subjects; .*counted over the 4 cross-validation "
                                         r"subjects only \(8 are held out"):
        build_cohort(manifest, excl, _qc_all(tmp_path), {**PARAMS, "n_folds": 5, "test_sites": ["A", "B"]}, 0,
                     qc_params=QC_OFF, **_outputs(tmp_path))


def test_motion_qc_moves_a_high_motion_subject_to_the_exclusions(tmp_path):
    manifest, excl = _manifest(tmp_path)
    qc = [_qc(tmp_path, f"sub-{i:02d}", mean_fd=0.8 if i == 4 else 0.12) for i in range(1, 13)]
    qc.append(_qc(tmp_path, "sub-13", mean_fd=None))  # not in the manifest: ignored
    qc[6] = _qc(tmp_path, "sub-07", mean_fd=None)  # no confounds (e.g. PCP): not checked, kept
    outs = _outputs(tmp_path)
    build_cohort(manifest, excl, qc, PARAMS, 0, qc_params=dict(QC_OFF, max_mean_fd=0.55), **outs)
    cohort = storage.read_table(outs["cohort_out"], kind="cohort")
    assert "sub-04" not in set(cohort.participant_id) and "sub-07" in set(cohort.participant_id)
    assert len(cohort) == 11
    exclusions = pd.read_csv(outs["exclusions_out"], sep="\t")
    row = exclusions[exclusions.participant_id == "sub-04"]
    assert row.stage.tolist() == ["qc"] and row.reason.tolist() == ["mean FD 0.800 mm > qc.max_mean_fd 0.55 mm"]
    assert storage.read_metadata(outs["cohort_out"])["qc_params"]["max_mean_fd"] == 0.55
    splits = pd.read_csv(outs["splits_out"], sep="\t")
    assert "sub-04" not in set(splits.participant_id)


def test_motion_qc_off_keeps_high_motion_subjects_and_on_excludes_each(tmp_path, caplog):
    manifest, excl = _manifest(tmp_path)
    planted = {4: {"mean_fd": 0.8}, 5: {"fd": [None, 0.3, 0.3, 0.1]}, 6: {"mean_std_dvars": 5.0}}
    qc = [_qc(tmp_path, f"sub-{i:02d}", **{"mean_fd": 0.12, "fd": [None, 0.1, 0.1, 0.1], "mean_std_dvars": 1.0,
                                            **planted.get(i, {})}) for i in range(1, 13)]
    qc[6] = _qc(tmp_path, "sub-07", mean_fd=None)  # no confounds: not checked
    outs = _outputs(tmp_path)
    with caplog.at_level("INFO", logger="brainage"):
        build_cohort(manifest, excl, qc, PARAMS, 0, qc_params=QC_OFF, **outs)
    assert len(storage.read_table(outs["cohort_out"])) == 12
    assert pd.read_csv(outs["exclusions_out"], sep="\t")["participant_id"].tolist() == ["sub-99"]
    assert ("motion QC: 0 of 12 subjects excluded (max_mean_fd=None, high_motion_fd=0.2, "
            "max_high_motion_fraction=None, max_mean_std_dvars=None); 1 without motion metrics not checked"
            ) in caplog.text

    on = {"max_mean_fd": 0.55, "high_motion_fd": 0.2, "max_high_motion_fraction": 0.5, "max_mean_std_dvars": 4.0}
    build_cohort(manifest, excl, qc, PARAMS, 0, qc_params=on, **outs)
    cohort = storage.read_table(outs["cohort_out"])
    assert len(cohort) == 9 and "sub-07" in set(cohort.participant_id)
    assert cohort.attrs["brainage"]["qc_params"] == on and cohort.attrs["brainage"]["n_excluded"] == 4
    exclusions = pd.read_csv(outs["exclusions_out"], sep="\t")
    assert exclusions.values.tolist()[1:] == [
        ["sub-04", "qc", "mean FD 0.800 mm > qc.max_mean_fd 0.55 mm"],
        ["sub-05", "qc", "high-motion fraction 0.667 (2 of 3 frames with FD > qc.high_motion_fd 0.2 mm) > "
                         "qc.max_high_motion_fraction 0.5"],
        ["sub-06", "qc", "mean std DVARS 5.000 > qc.max_mean_std_dvars 4"],
    ]
    assert "motion QC: 3 of 12 subjects excluded" in caplog.text


def test_cli_rejects_bad_qc_params(tmp_path, capsys):
    manifest, excl = _manifest(tmp_path)
    outs = _outputs(tmp_path)
    args = ["build", "--manifest", str(manifest), "--participant-exclusions", str(excl),
            "--qc", *map(str, _qc_all(tmp_path)), "--params", json.dumps(PARAMS), "--seed", "3",
            "--qc-params", json.dumps({**QC_OFF, "max_fd": 1}),
            "--cohort-out", str(outs["cohort_out"]), "--splits-out", str(outs["splits_out"]),
            "--exclusions-out", str(outs["exclusions_out"])]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "ERROR brainage.dataset: qc params: expected keys" in err and "unknown ['max_fd']" in err
    assert not outs["cohort_out"].exists()
