"""Cross-fitted inner predictions for every model, the stack on them, and named model variants."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from train_fixtures import TINY_PARAMS, write_study

from brainage import storage
from brainage.errors import ConfigError, InputDataError
from brainage.models import get_model, resolve
from brainage.models.stack import Stack, StackConfig
from brainage.train.__main__ import main
from brainage.train import fit
from brainage.train.fit import INNER_DONE, derive_seeds, inner_folds, read_design, train_model
from brainage.train.stacking import load_base_predictions


def _train(study, out, model="dummy", fold=1, params=None, n_inner=3, inputs=None, **kwargs):
    return train_model(
        model=model, fold=fold, cohort=study["cohort"], splits=study["splits"],
        inputs=inputs or study["inputs"], params=TINY_PARAMS.get(model, {}) if params is None else params,
        seed=42, threads=1, out_dir=out, n_inner=n_inner, **kwargs,
    )


def _inner(out) -> pd.DataFrame:
    pred = storage.read_table(out / "predictions.parquet", kind="predictions")
    return pred[pred["split"] == "inner"].set_index("participant_id")


# --- cross-fitting ------------------------------------------------------------------------


def test_every_training_subject_is_predicted_by_a_model_fitted_on_the_other_inner_folds(tmp_path):
    # The dummy predicts its training mean: a subject's inner prediction must be the mean age of
    # exactly the training subjects outside its inner fold.
    study = write_study(tmp_path, n=30, n_folds=3)
    card = _train(study, tmp_path / "out", n_inner=4)
    design = read_design(study["cohort"], study["splits"], 1)
    train = design[design["train"]].reset_index(drop=True)
    folds = inner_folds(train["age"].to_numpy(), train["site"].to_numpy(), 4, False, derive_seeds(42, 1, "dummy")["inner"])
    expected = [train["age"][folds != f].mean() for f in folds]
    inner = _inner(tmp_path / "out")
    assert sorted(inner.index) == sorted(train["participant_id"])  # every training subject, once
    np.testing.assert_allclose(inner.loc[train["participant_id"], "predicted_age"], expected)
    assert len(set(np.round(expected, 9))) > 1  # several inner models, not one mean
    assert card["n_inner"] == card["n_train"] == 20 and card["inner_folds"] == {"n_folds": 4, "grouped_by_site": False}
    # The test fold is predicted by the mean of the four members: the same models the inner
    # predictions (and so the bias line and the stack) come from.
    pred = storage.read_table(tmp_path / "out" / "predictions.parquet")
    members = [train["age"][folds != k].mean() for k in range(4)]
    np.testing.assert_allclose(pred.loc[pred["split"] == "test", "predicted_age"], np.mean(members))


def test_every_model_of_a_fold_gets_the_same_inner_folds():
    seeds = [derive_seeds(42, 2, model) for model in ("dummy", "connectome_ridge", "roi_gru", "ridge_tangent")]
    assert len({s["inner"] for s in seeds}) == 1 and len({s["model"] for s in seeds}) == 4
    assert derive_seeds(42, 3, "dummy")["inner"] != seeds[0]["inner"]


def test_inner_folds_follow_the_outer_design():
    ages = np.linspace(10, 60, 40)
    sites = np.tile(["A", "B", "C", "D", "E", "F", "G", "H"], 5)
    grouped = inner_folds(ages, sites, 4, True, 0)
    assert all(len(set(grouped[sites == s])) == 1 for s in "ABCDEFGH")  # a site is never split
    assert len(set(grouped)) == 4
    with pytest.raises(ConfigError, match="train.inner_folds=4: inner folds grouped by site need at least 4 sites"):
        inner_folds(ages[:10], np.repeat(["A", "B"], 5), 4, True, 0)
    stratified = inner_folds(ages, sites, 4, False, 0)
    # age-stratified: each inner fold spans the age range
    assert all(ages[stratified == f].min() < 20 and ages[stratified == f].max() > 50 for f in range(4))
    assert len(set(inner_folds(ages[:3], sites[:3], 5, False, 0))) == 3  # K capped at the subjects


def test_a_torch_job_reuses_its_finished_inner_fits_of_the_same_run_only(tmp_path, caplog, monkeypatch):
    study = write_study(tmp_path, n=15, n_folds=3)
    whole = tmp_path / "whole"
    _train(study, whole, model="roi_gru", n_inner=2)
    assert not list(whole.glob("inner-*")) and not list(whole.glob("resume*"))  # cleaned up
    # Keep the finished inner fits of a second run, as a killed job leaves them.
    monkeypatch.setattr(fit._InnerStore, "clear", lambda self, n: None)
    kept = tmp_path / "kept"
    _train(study, kept, model="roi_gru", n_inner=2)
    state = torch.load(kept / INNER_DONE.format(k=0), weights_only=True)
    assert state["card"]["fingerprint"]["fit"] == "inner 0"
    # Same run, but member 0's output shifted by 1 year: reused, its subjects come out 1 year higher.
    resumed, other = tmp_path / "resumed", tmp_path / "other"
    for out, fingerprint in ((resumed, state["card"]["fingerprint"]), (other, dict(state["card"]["fingerprint"], code="0123"))):
        out.mkdir()
        torch.save(dict(state, target_mean=state["target_mean"] + 1.0, card=dict(state["card"], fingerprint=fingerprint)),
                   out / INNER_DONE.format(k=0))
    with caplog.at_level("INFO"):
        _train(study, resumed, model="roi_gru", n_inner=2)
        _train(study, other, model="roi_gru", n_inner=2)
    design = read_design(study["cohort"], study["splits"], 1)
    train = design[design["train"]]
    first = train["participant_id"][inner_folds(train["age"].to_numpy(), train["site"].to_numpy(), 2, False,
                                                 derive_seeds(42, 1, "roi_gru")["inner"]) == 0]
    shift = _inner(resumed)["predicted_age"] - _inner(whole)["predicted_age"]
    np.testing.assert_allclose(shift[first], 1.0, rtol=1e-5)
    np.testing.assert_array_equal(shift.drop(first), 0.0)
    assert "inner fit 1: reusing" in caplog.text
    assert "inner fit of another run (fingerprint differs); fitting it again" in caplog.text
    np.testing.assert_array_equal(_inner(other)["predicted_age"], _inner(whole)["predicted_age"])


def test_cli_takes_the_inner_folds_and_the_site_grouping(tmp_path):
    study = write_study(tmp_path, n=12, n_folds=3)
    argv = ["model", "--model", "dummy", "--fold", "0", "--cohort", str(study["cohort"]), "--splits",
            str(study["splits"]), "--inputs", *map(str, study["inputs"]), "--params", "{}", "--seed", "1",
            "--threads", "1", "--out-dir", str(tmp_path / "out"), "--inner-folds", "2"]
    assert main(argv) == 0
    assert storage.read_json(tmp_path / "out" / "card.json")["inner_folds"]["n_folds"] == 2
    # One site only: inner folds grouped by site cannot be made, and the error says why.
    assert main([*argv, "--group-by-site"]) != 0


# --- the stack ----------------------------------------------------------------------------


def test_stack_recovers_planted_non_negative_weights_and_drops_a_harmful_model():
    rng = np.random.default_rng(0)
    age = rng.uniform(10, 60, 300)
    good, fair = age + rng.normal(0, 2, 300), age + rng.normal(0, 6, 300)
    harmful = -age + rng.normal(0, 1, 300)  # anti-correlated: an unconstrained fit would use it
    # Age is exactly 2 + 0.6 good + 0.3 fair + 0.1 x (a third model) when noise is removed.
    third = age + rng.normal(0, 1, 300)
    target = 2 + 0.6 * good + 0.3 * fair + 0.1 * third
    stack = Stack(StackConfig(models=("good", "fair", "third", "harmful"))).fit(list(np.column_stack([good, fair, third, harmful])), target)
    weights = stack.fit_info_["weights"]
    np.testing.assert_allclose([weights[m] for m in ("good", "fair", "third")], [0.6, 0.3, 0.1], atol=1e-9)
    assert weights["harmful"] == pytest.approx(0.0, abs=1e-12) and stack.fit_info_["intercept"] == pytest.approx(2.0)
    noisy = Stack(StackConfig(models=("good", "harmful"))).fit(list(np.column_stack([good, harmful])), age)
    assert noisy.fit_info_["weights"]["harmful"] == pytest.approx(0.0, abs=1e-12) and noisy.fit_info_["weights"]["good"] > 0.9


def test_stack_select_keeps_the_base_of_lowest_mae_unchanged():
    """method select: the base whose predictions of the training subjects have the lowest MAE, weight 1."""
    ages = np.array([10.0, 20.0, 30.0, 40.0])
    biased = ages + 3.0                                # MAE 3, MSE 9
    spike = ages + np.array([0.0, 0.0, 0.0, 10.0])     # MAE 2.5, MSE 25: chosen by MAE, not by squared error
    far = ages - 5.0                                   # MAE 5
    stack = Stack(StackConfig(models=("biased", "spike", "far"), method="select"))
    stack.fit(list(np.column_stack([biased, spike, far])), ages)
    assert stack.fit_info_["weights"] == {"biased": 0.0, "spike": 1.0, "far": 0.0}
    assert stack.fit_info_["intercept"] == 0.0
    assert stack.fit_info_["inner_mae"] == {"biased": 3.0, "spike": 2.5, "far": 5.0}
    np.testing.assert_array_equal(stack.predict(list(np.array([[50.0, 61.0, 70.0], [5.0, 6.0, 7.0]]))), [61.0, 6.0])
    with pytest.raises(ConfigError, match="stack: method must be one of nnls, select, got 'best'"):
        StackConfig(models=("a",), method="best")


def test_stack_is_fitted_on_cross_fitted_predictions_and_applied_to_the_test_predictions(tmp_path):
    study = write_study(tmp_path, n=90, n_folds=3)
    bases = {"dummy": {}, "connectome_ridge": TINY_PARAMS["connectome_ridge"]}
    files = []
    for name, params in bases.items():
        _train(study, tmp_path / name, model=name, params=params)
        files.append(tmp_path / name / "predictions.parquet")
    card = _train(study, tmp_path / "stack", model="stack", params={"models": list(bases)}, inputs=files)
    pred = storage.read_table(tmp_path / "stack" / "predictions.parquet")
    assert card["n_inner"] == 60 and (pred["split"] == "test").sum() == 30
    base = {name: storage.read_table(f).set_index(["participant_id", "split"])["predicted_age"]
            for name, f in zip(bases, files)}
    test = pred[pred["split"] == "test"]
    keys = list(zip(test["participant_id"], test["split"]))
    # The mean of the K stacks (one per inner fit) applied to the bases' test predictions.
    by_hand = np.mean([info["intercept"] + sum(info["weights"][m] * base[m].loc[keys].to_numpy() for m in bases)
                       for info in card["fit_info"]], axis=0)
    np.testing.assert_allclose(test["predicted_age"], by_hand)
    weights = pd.DataFrame([info["weights"] for info in card["fit_info"]]).mean()
    # The planted series carry age, the dummy none: the ridge takes the weight.
    assert weights["connectome_ridge"] > 0.5 and weights["dummy"] >= 0.0
    # The stack's own inner predictions are cross-fitted too (one per training subject).
    assert sorted(_inner(tmp_path / "stack").index) == sorted(_inner(tmp_path / "dummy").index)


def test_stack_inputs_name_the_file_that_lacks_a_subject_or_belongs_elsewhere(tmp_path):
    study = write_study(tmp_path, n=12, n_folds=3)
    _train(study, tmp_path / "dummy", model="dummy")
    path = tmp_path / "dummy" / "predictions.parquet"
    design = read_design(study["cohort"], study["splits"], 1)
    X, sources = load_base_predictions([path], design, 1, ["dummy"])
    assert len(X) == len(design) and sources == [str(path)]
    table = storage.read_table(path, kind="predictions")
    cut = tmp_path / "cut.parquet"
    storage.write_table(cut, table.iloc[1:], kind="predictions")
    with pytest.raises(InputDataError, match=f"{cut}: no prediction of subject"):
        load_base_predictions([cut], design, 1, ["dummy"])
    with pytest.raises(InputDataError, match="expected one model's predictions of fold 2"):
        load_base_predictions([path], design, 2, ["dummy"])
    with pytest.raises(InputDataError, match="no predictions file of base model\\(s\\) ridge for fold 1"):
        load_base_predictions([path], design, 1, ["dummy", "ridge"])


# --- variants -----------------------------------------------------------------------------


def test_a_variant_is_its_registered_model_with_the_parameters_that_differ():
    models = {"connectome_ridge": {"kind": "correlation", "alphas": [1.0, 10.0], "target": "log_age"}}
    variants = {"ridge_tangent": {"model": "connectome_ridge", "kind": "tangent"}}
    base, params = resolve("ridge_tangent", models, variants)
    assert base == "connectome_ridge" and params == {"kind": "tangent", "alphas": [1.0, 10.0], "target": "log_age"}
    assert resolve("connectome_ridge", models, variants) == ("connectome_ridge", models["connectome_ridge"])
    model = get_model("ridge_tangent", {**params, "model": base}, 0)
    assert model.config.kind == "tangent" and model.config.target == "log_age"
    with pytest.raises(ValueError, match="variants.svm: model 'svm' is not a registered model"):
        resolve("svm", models, {"svm": {"model": "svm"}})
    with pytest.raises(ValueError, match="'dummy' is a registered model; give the variant another name"):
        resolve("dummy", models, {"dummy": {"model": "connectome_ridge"}})
    with pytest.raises(ValueError, match="unknown model 'ridge_x'"):
        resolve("ridge_x", models, variants)


def test_a_variant_trains_under_its_own_name(tmp_path):
    study = write_study(tmp_path, n=12, n_folds=3)
    params = {**TINY_PARAMS["connectome_ridge"], "kind": "tangent", "model": "connectome_ridge"}
    card = _train(study, tmp_path / "out", model="ridge_tangent", params=params)
    pred = storage.read_table(tmp_path / "out" / "predictions.parquet")
    assert (pred["model"] == "ridge_tangent").all() and card["model"] == "ridge_tangent"
    assert card["params"]["kind"] == "tangent"
    assert json.loads(json.dumps(card["seeds"]))["inner"] == derive_seeds(42, 1, "dummy")["inner"]


def test_stack_bases_default_to_every_other_listed_model_but_the_dummy():
    from brainage.models import stack_bases

    listed = {"dummy": "dummy", "connectome_ridge": "connectome_ridge", "ridge_tangent": "connectome_ridge",
              "roi_gru": "roi_gru", "stack": "stack", "stack_b": "stack"}
    assert stack_bases({"models": []}, listed) == ["connectome_ridge", "ridge_tangent", "roi_gru"]
    assert stack_bases({}, listed) == ["connectome_ridge", "ridge_tangent", "roi_gru"]
    assert stack_bases({"models": ["roi_gru"]}, listed) == ["roi_gru"]
