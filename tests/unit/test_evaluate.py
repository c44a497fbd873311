"""brainage.evaluate: hand-computed metrics, age-bias correction on inner rows only, coverage checks."""

import logging
import math

import numpy as np
import pandas as pd
import pytest

from brainage import storage
from brainage.errors import ConfigError, InputDataError
from brainage.evaluate import evaluate
from brainage.evaluate.__main__ import main
from brainage.evaluate.bias import fit_bias
from brainage.evaluate.metrics import model_metrics

AGES = [10.0, 20.0, 30.0, 40.0]
IDS = ["sub-01", "sub-02", "sub-03", "sub-04"]


def _write(path, model, rows, kind="predictions"):
    """rows: (participant_id, fold, split, age, predicted_age[, set]); set "cv" unless given."""
    rows = [(*row, "cv") if len(row) == 5 else row for row in rows]
    df = pd.DataFrame(rows, columns=["participant_id", "fold", "split", "age", "predicted_age", "set"])
    df.insert(1, "model", model)
    storage.write_table(path, df, kind=kind, provenance={"model": model})
    return path


def _test_rows(predicted, folds=(0, 0, 1, 1)):
    return [(pid, f, "test", a, p) for pid, f, a, p in zip(IDS, folds, AGES, predicted)]


def _run(tmp_path, files, bias_correction=False, resamples=200):
    out_pred, out_metrics = tmp_path / "out" / "predictions.parquet", tmp_path / "out" / "metrics.tsv"
    evaluate(files, {"bias_correction": bias_correction, "bootstrap_resamples": resamples}, out_pred, out_metrics)
    return storage.read_table(out_pred, kind="evaluated_predictions"), pd.read_csv(out_metrics, sep="\t")


def test_metrics_match_hand_computed_values(tmp_path):
    files = [
        _write(tmp_path / "ridge.parquet", "ridge", _test_rows([12.0, 18.0, 33.0, 40.0])),
        _write(tmp_path / "dummy.parquet", "dummy", _test_rows([25.0] * 4)),
    ]
    preds, metrics = _run(tmp_path, files)
    # The dummy comes first whatever the file order.
    assert metrics["model"].tolist() == ["dummy", "ridge"]
    ridge = metrics.set_index("model").loc["ridge"]
    # errors 2, -2, 3, 0; true ages: mean 25, SS_tot 500, sample SD sqrt(500/3)
    assert ridge["n"] == 4
    assert ridge["mae"] == pytest.approx(7 / 4)
    assert ridge["rmse"] == pytest.approx(math.sqrt(17 / 4))
    assert ridge["r2"] == pytest.approx(1 - 17 / 500)
    assert ridge["mae_over_sd"] == pytest.approx((7 / 4) / math.sqrt(500 / 3))
    # x deviations -15, -5, 5, 15; y deviations from 25.75: -13.75, -7.75, 7.25, 14.25
    assert ridge["r"] == pytest.approx(495 / math.sqrt(500 * 504.75))
    assert ridge["mae_corrected"] == ridge["mae"] and ridge["r_corrected"] == ridge["r"]
    dummy = metrics.set_index("model").loc["dummy"]
    assert dummy["mae"] == pytest.approx(10.0)
    assert dummy["r2"] == pytest.approx(0.0)
    assert math.isnan(dummy["r"])  # constant predictions have no correlation
    assert dummy["delta_mae_vs_dummy"] == 0.0
    assert ridge["delta_mae_vs_dummy"] == pytest.approx(7 / 4 - 10)

    assert list(preds.columns) == [
        "participant_id", "model", "set", "fold", "age", "predicted_age", "predicted_age_corrected"]
    assert len(preds) == 8 and (preds["set"] == "cv").all()
    # Without held-out subjects: one metrics row per model, all "cv".
    assert metrics["set"].tolist() == ["cv", "cv"] and list(metrics.columns[:3]) == ["model", "set", "n"]


def test_metrics_order_follows_files_and_delta_is_na_without_dummy(tmp_path):
    files = [
        _write(tmp_path / "b.parquet", "zeta", _test_rows([11.0, 21.0, 31.0, 41.0])),
        _write(tmp_path / "a.parquet", "alpha", _test_rows([12.0, 18.0, 33.0, 40.0])),
    ]
    _run(tmp_path, files)
    text = (tmp_path / "out" / "metrics.tsv").read_text().splitlines()
    assert [line.split("\t")[0] for line in text[1:]] == ["zeta", "alpha"]
    assert all(line.endswith("\tn/a") for line in text[1:])


def _planted(tmp_path, name, model, slope, intercept, test_pred=None):
    """Two folds; inner rows are the other fold's subjects, predicted as slope * age + intercept."""
    rows = []
    ages = np.array(AGES)
    test_pred = slope * ages + intercept if test_pred is None else np.asarray(test_pred)
    for fold, (test_idx, inner_idx) in enumerate([([0, 1], [2, 3]), ([2, 3], [0, 1])]):
        rows += [(IDS[i], fold, "test", ages[i], test_pred[i]) for i in test_idx]
        rows += [(IDS[i], fold, "inner", ages[i], slope * ages[i] + intercept) for i in inner_idx]
    return _write(tmp_path / name, model, rows)


def test_bias_correction_recovers_a_planted_linear_bias_exactly(tmp_path):
    preds, metrics = _run(tmp_path, [_planted(tmp_path, "m.parquet", "m", 0.5, 10.0)], bias_correction=True)
    np.testing.assert_allclose(preds["predicted_age_corrected"], preds["age"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(preds["predicted_age"], 0.5 * preds["age"] + 10.0)
    row = metrics.iloc[0]
    assert row["mae_corrected"] == pytest.approx(0.0, abs=1e-10)
    assert row["r_corrected"] == pytest.approx(1.0)
    fits = preds.attrs["brainage"]["bias_fits"]
    assert [(f["set"], f["fold"], f["applied"]) for f in fits] == [("cv", 0, True), ("cv", 1, True)]
    assert fits[0]["slope"] == pytest.approx(0.5) and fits[0]["intercept"] == pytest.approx(10.0)


def test_bias_is_fitted_on_inner_rows_only(tmp_path):
    # Test predictions far off the inner line: the fit must not move, so corrected = (p - 10) / 0.5.
    test_pred = [40.0, 5.0, 70.0, 1.0]
    preds, _ = _run(tmp_path, [_planted(tmp_path, "m.parquet", "m", 0.5, 10.0, test_pred)], bias_correction=True)
    fits = preds.attrs["brainage"]["bias_fits"]
    assert all(f["slope"] == pytest.approx(0.5) and f["intercept"] == pytest.approx(10.0) for f in fits)
    by_id = preds.set_index("participant_id")
    np.testing.assert_allclose(by_id.loc[IDS, "predicted_age_corrected"], (np.array(test_pred) - 10.0) / 0.5)


def test_dummy_guard_leaves_flat_predictions_uncorrected(tmp_path, caplog):
    file = _planted(tmp_path, "d.parquet", "dummy", 0.0, 25.0)
    with caplog.at_level(logging.INFO, logger="brainage.evaluate"):
        preds, _ = _run(tmp_path, [file], bias_correction=True)
    np.testing.assert_array_equal(preds["predicted_age_corrected"], preds["predicted_age"])
    assert not any(f["applied"] for f in preds.attrs["brainage"]["bias_fits"])
    assert "slope 0.000 below 0.1; predictions left uncorrected" in caplog.text


def test_bias_correction_false_leaves_predictions(tmp_path):
    preds, metrics = _run(tmp_path, [_planted(tmp_path, "m.parquet", "m", 0.5, 10.0)], bias_correction=False)
    np.testing.assert_array_equal(preds["predicted_age_corrected"], preds["predicted_age"])
    assert metrics.iloc[0]["mae_corrected"] == metrics.iloc[0]["mae"]


def test_fit_bias_needs_two_distinct_ages():
    with pytest.raises(ValueError, match=r"model 'm' fold 0: cannot fit .* on 2 'inner' predictions with ages \[30\.0\]"):
        fit_bias(np.array([30.0, 30.0]), np.array([25.0, 26.0]), "model 'm' fold 0")


@pytest.mark.parametrize(
    ("rows", "match"),
    [
        (_test_rows([1.0] * 4) + [("sub-02", 1, "test", 20.0, 3.0)], r"model 'm': subjects in more than one test row: sub-02"),
        (_test_rows([1.0] * 4)[:3], r"model 'm': no test prediction for subjects sub-04"),
    ],
)
def test_each_subject_once_per_model(tmp_path, rows, match):
    files = [_write(tmp_path / "ok.parquet", "ok", _test_rows([1.0] * 4)), _write(tmp_path / "m.parquet", "m", rows)]
    with pytest.raises(ValueError, match=match):
        _run(tmp_path, files)


def test_inner_and_test_rows_of_a_fold_must_not_share_subjects(tmp_path):
    rows = _test_rows([12.0, 18.0, 33.0, 40.0], folds=(0, 0, 0, 0))
    rows += [("sub-01", 0, "inner", 10.0, 11.0), ("sub-05", 0, "inner", 50.0, 45.0)]
    with pytest.raises(ValueError, match=r"model 'm' fold 0: subjects both in 'inner' and 'test' rows: sub-01"):
        _run(tmp_path, [_write(tmp_path / "m.parquet", "m", rows)], bias_correction=True)


def test_bad_prediction_files(tmp_path):
    bad_split = _write(tmp_path / "s.parquet", "m", [("sub-01", 0, "train", 10.0, 11.0)])
    with pytest.raises(InputDataError, match=r"s\.parquet: split values \['train'\], expected only \['test', 'inner'\]"):
        _run(tmp_path, [bad_split])
    bad_set = _write(tmp_path / "b.parquet", "m", [("sub-01", 0, "test", 10.0, 11.0, "external")])
    with pytest.raises(InputDataError, match=r"b\.parquet: set values \['external'\], expected only \['cv', 'test'\]"):
        _run(tmp_path, [bad_set])
    leak = _write(tmp_path / "l.parquet", "m", [("sub-09", 0, "inner", 10.0, 11.0, "test")])
    with pytest.raises(InputDataError, match=r"l\.parquet: held-out \(set 'test'\) subjects in 'inner' rows: \['sub-09'\]"):
        _run(tmp_path, [leak])
    storage.write_table(tmp_path / "c.parquet", pd.DataFrame({"participant_id": ["sub-01"], "model": ["m"]}),
                        kind="predictions")
    with pytest.raises(InputDataError, match=r"c\.parquet: predictions table lacks columns \['fold', 'split', 'set', 'age'"):
        _run(tmp_path, [tmp_path / "c.parquet"])
    cohort = _write(tmp_path / "k.parquet", "m", _test_rows([1.0] * 4), kind="cohort")
    with pytest.raises(ValueError, match=r"k\.parquet: holds 'cohort', expected 'predictions'"):
        _run(tmp_path, [cohort])
    with pytest.raises(ValueError, match=r"no prediction files given"):
        _run(tmp_path, [])


@pytest.mark.parametrize("params", [{}, {"bias_correction": True},
                                    {"bias_correction": True, "bootstrap_resamples": 10, "method": "linear"}])
def test_params_must_be_the_evaluate_section(tmp_path, params):
    file = _write(tmp_path / "m.parquet", "m", _test_rows([1.0] * 4))
    with pytest.raises(ConfigError, match=r"evaluate params: expected keys \['bias_correction', 'bootstrap_resamples'\]"):
        evaluate([file], params, tmp_path / "p.parquet", tmp_path / "m.tsv")


@pytest.mark.parametrize("resamples", [-1, 2.5, True, "100"])
def test_bootstrap_resamples_must_be_a_whole_number(tmp_path, resamples):
    file = _write(tmp_path / "m.parquet", "m", _test_rows([1.0] * 4))
    with pytest.raises(ConfigError, match=r"evaluate.bootstrap_resamples: expected a whole number >= 0, found "):
        evaluate([file], {"bias_correction": True, "bootstrap_resamples": resamples},
                 tmp_path / "p.parquet", tmp_path / "m.tsv")


def test_cli_run(tmp_path):
    file = _planted(tmp_path, "m.parquet", "m", 0.5, 10.0)
    out_pred, out_metrics = tmp_path / "p.parquet", tmp_path / "m.tsv"
    args = ["run", "--predictions", str(file), "--params", '{"bias_correction": true, "bootstrap_resamples": 50}',
            "--seed", "3", "--predictions-out", str(out_pred), "--metrics-out", str(out_metrics)]
    assert main(args) == 0
    assert pd.read_csv(out_metrics, sep="\t")["mae_corrected"].iloc[0] == pytest.approx(0.0, abs=1e-10)
    args[args.index("--params") + 1] = '{"bias_correction": true, "bootstrap_resamples": 50, "x": 1}'
    assert main(args) == 1


# --- held-out (external) test set -------------------------------------------------------

HELD_IDS = ["sub-50", "sub-60", "sub-70"]
HELD_AGES = [50.0, 60.0, 70.0]
# Each fold model's predictions of the held-out subjects; their mean is [50, 62, 70].
HELD_PRED = {0: [48.0, 58.0, 75.0], 1: [52.0, 66.0, 65.0]}


def _with_heldout(tmp_path, name, model, slope=0.5, intercept=10.0, oof=None, held_ages=HELD_AGES, held=HELD_PRED):
    """The two-fold cv rows of :func:`_planted` plus every fold's predictions of three held-out subjects."""
    cv = storage.read_table(_planted(tmp_path, name, model, slope, intercept, oof))
    rows = [tuple(r) for r in cv[["participant_id", "fold", "split", "age", "predicted_age", "set"]].itertuples(index=False)]
    rows += [(pid, fold, "test", age, p, "test")
             for fold, preds in held.items() for pid, age, p in zip(HELD_IDS, held_ages, preds)]
    return _write(tmp_path / name, model, rows)


def test_heldout_metrics_are_those_of_the_fold_mean(tmp_path):
    files = [_with_heldout(tmp_path, "m.parquet", "m"),
             _with_heldout(tmp_path, "d.parquet", "dummy", held={0: [25.0] * 3, 1: [35.0] * 3})]
    preds, metrics = _run(tmp_path, files)
    assert list(zip(metrics["model"], metrics["set"])) == [("dummy", "cv"), ("m", "cv"), ("dummy", "test"), ("m", "test")]
    test = metrics[metrics["set"] == "test"].set_index("model")
    m = test.loc["m"]
    # Ensemble [50, 62, 70] against ages [50, 60, 70]: errors 0, 2, 0; SS_tot 200.
    assert m["n"] == 3
    assert m["mae"] == pytest.approx(2 / 3)
    assert m["rmse"] == pytest.approx(math.sqrt(4 / 3))
    assert m["r2"] == pytest.approx(1 - 4 / 200)
    assert m["mae_over_sd"] == pytest.approx((2 / 3) / 10.0)
    # x deviations -10, 0, 10; y deviations from 182/3: -32/3, 4/3, 28/3 -> sum xy 200, sum yy 1824/9.
    assert m["r"] == pytest.approx(200 / math.sqrt(200 * 1824 / 9))
    # The dummy's held-out prediction: mean of its fold predictions, 30 for everyone.
    assert test.loc["dummy", "mae"] == pytest.approx(30.0)
    assert m["delta_mae_vs_dummy"] == pytest.approx(2 / 3 - 30.0)
    # The cv rows are exactly what they are without a held-out set.
    _, cv_metrics = _run(tmp_path / "cv", [_planted(tmp_path, "m2.parquet", "m", 0.5, 10.0)])
    cv_m = metrics[(metrics["set"] == "cv") & (metrics["model"] == "m")].reset_index(drop=True)
    vs_dummy = [c for c in cv_m.columns if c.startswith("delta_mae_vs_dummy")]  # one run has no dummy
    pd.testing.assert_frame_equal(cv_m.drop(columns=vs_dummy), cv_metrics.drop(columns=vs_dummy))
    held = preds[preds["set"] == "test"]
    assert len(held) == 6 and (held["fold"] == -1).all()
    np.testing.assert_allclose(held.loc[held["model"] == "m", "predicted_age"], [50.0, 62.0, 70.0])


def test_heldout_bias_line_is_fitted_on_cv_out_of_fold_predictions_only(tmp_path):
    # cv out-of-fold predictions: 0.8 * age + 4 (inner rows: 0.5 * age + 10). The held-out line
    # must be the out-of-fold one, whatever the held-out subjects' ages or predictions.
    oof = 0.8 * np.array(AGES) + 4.0
    preds, metrics = _run(tmp_path, [_with_heldout(tmp_path, "m.parquet", "m", oof=oof)], bias_correction=True)
    fits = preds.attrs["brainage"]["bias_fits"]
    held_fit = [f for f in fits if f["set"] == "test"]
    assert len(held_fit) == 1 and held_fit[0]["fold"] == -1 and held_fit[0]["n"] == 4
    assert held_fit[0]["slope"] == pytest.approx(0.8) and held_fit[0]["intercept"] == pytest.approx(4.0)
    assert all(f["slope"] == pytest.approx(0.5) for f in fits if f["set"] == "cv")
    held = preds[preds["set"] == "test"]
    np.testing.assert_allclose(held["predicted_age_corrected"], (np.array([50.0, 62.0, 70.0]) - 4.0) / 0.8)
    # Other true ages and other predictions of the held-out subjects: the same line.
    moved, _ = _run(tmp_path / "moved", [_with_heldout(tmp_path, "x.parquet", "m", oof=oof, held_ages=[5.0, 90.0, 33.0],
                                                       held={0: [1.0, 2.0, 3.0], 1: [9.0, 8.0, 7.0]})],
                    bias_correction=True)
    moved_fit = [f for f in moved.attrs["brainage"]["bias_fits"] if f["set"] == "test"][0]
    assert (moved_fit["slope"], moved_fit["intercept"]) == (held_fit[0]["slope"], held_fit[0]["intercept"])
    row = metrics[metrics["set"] == "test"].iloc[0]
    assert row["mae_corrected"] == pytest.approx(np.mean(np.abs((np.array([50.0, 62.0, 70.0]) - 4.0) / 0.8 - HELD_AGES)))


@pytest.mark.parametrize(
    ("held", "match"),
    [
        ({0: [48.0, 58.0, 75.0]}, r"model 'm': no held-out prediction for sub-50 \(fold 1\), sub-60 \(fold 1\)"),
        ({0: [1.0] * 3, 1: [1.0] * 3, 7: [1.0] * 3}, r"model 'm': held-out rows of fold\(s\) \[7\], which has no"),
    ],
)
def test_heldout_coverage(tmp_path, held, match):
    with pytest.raises(ValueError, match=match):
        _run(tmp_path, [_with_heldout(tmp_path, "m.parquet", "m", held=held)])


def test_heldout_subject_twice_in_a_fold_in_cv_or_with_two_ages(tmp_path):
    base = storage.read_table(_with_heldout(tmp_path, "m.parquet", "m"))
    cols = ["participant_id", "fold", "split", "age", "predicted_age", "set"]
    rows = [tuple(r) for r in base[cols].itertuples(index=False)]
    cases = [
        (rows + [("sub-50", 0, "test", 50.0, 1.0, "test")], r"held-out subjects predicted twice by one fold: sub-50 \(fold 0\)"),
        (rows + [("sub-01", 0, "test", 10.0, 1.0, "test")], r"held-out subjects also in cross-validation rows: sub-01"),
        ([r if r[:2] != ("sub-60", 1) else ("sub-60", 1, "test", 61.0, 66.0, "test") for r in rows],
         r"held-out subjects with differing ages: sub-60"),
    ]
    for i, (case, match) in enumerate(cases):
        with pytest.raises(ValueError, match=rf"model 'm': {match}"):
            _run(tmp_path, [_write(tmp_path / f"c{i}.parquet", "m", case)])
    # Every model must predict the same held-out subjects.
    other = _write(tmp_path / "o.parquet", "o", [r for r in rows if r[0] != "sub-70"])
    with pytest.raises(ValueError, match=r"model 'o': no held-out prediction for sub-70 \(fold 0\), sub-70 \(fold 1\)"):
        _run(tmp_path, [_with_heldout(tmp_path, "m.parquet", "m"), other])


def test_delta_age_correlation_before_and_after_correction_has_known_values():
    age = np.linspace(10, 50, 41)
    # Regression to the mean: delta = 15 - 0.5 age falls with age exactly (r = -1); an
    # over-correction leaves delta = 0.1 (age - 30), rising exactly (r = +1).
    scores = model_metrics(age, 0.5 * age + 15, age + 0.1 * (age - 30))
    assert scores["delta_age_r"] == pytest.approx(-1.0) and scores["delta_age_r_corrected"] == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    noisy = age + rng.normal(0, 3, len(age))
    expected = np.corrcoef(age, noisy - age)[0, 1]
    assert model_metrics(age, noisy, noisy)["delta_age_r"] == pytest.approx(expected)
    # A perfect correction leaves a constant delta: no correlation can be computed.
    assert np.isnan(model_metrics(age, 0.5 * age + 15, age)["delta_age_r_corrected"])
