"""brainage.report: the self-contained HTML page, its tables, figures and parameter-driven methods text."""

import base64
import copy
import io
import json
import re
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from brainage import __version__, storage
from brainage._version import source_version
from brainage.errors import ConfigError, InputDataError
from brainage.report import build_report
from brainage.report.__main__ import main
from brainage.report.figures import model_figures, panel_titles, site_colours
from brainage.report.methods import methods_paragraphs
from brainage.report.page import summary_text
from brainage.report.tables import (
    CORRECTED_HEADING, CORRECTED_LEGEND, CORRECTED_TEXT, NO_EXCLUSION, corrected_section, corrected_table,
    exclusions_table, metrics_sections, metrics_table, qc_table,
)

REPO = Path(__file__).resolve().parents[2]
IDS = [f"sub-{i:03d}" for i in range(1, 9)]  # 8 listed; sub-007 and sub-008 are excluded
AGES = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]
EXCLUDED = [("sub-007", "extract", "3 of 100 frames left after censoring (FD > 0.5 mm), need 40"),
            ("sub-008", "participants", "no preprocessed BOLD: <derivatives>/sub-008_bold.nii.gz")]
METRICS = pd.DataFrame({
    "model": ["dummy", "connectome_ridge"], "set": ["cv", "cv"], "n": [6, 6], "mae": [14.5, 4.2049], "rmse": [17.0781, 5.0],
    "r": [float("nan"), 0.98765], "r2": [-0.02, 0.91234], "mae_over_sd": [0.775, 0.22476],
    "mae_corrected": [14.5, 3.9], "r_corrected": [float("nan"), 0.98765],
    "delta_age_r": [-1.0, -0.45678], "delta_age_r_corrected": [-1.0, 0.01234], "delta_mae_vs_dummy": [0.0, -10.2951],
})


def resolved_config():
    """The repository's default config (what the schema resolves when nothing is overridden)."""
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def write_inputs(tmp_path, *, sites=("siteA", "siteB"), exclusions=EXCLUDED, metrics=METRICS, held_out=()):
    """Write a tiny consistent set of report inputs with brainage.storage; return the path arguments.

    ``held_out``: subjects whose predictions are marked as the held-out test set (fold -1).
    """
    site_of = {pid: sites[i % len(sites)] for i, pid in enumerate(IDS)}
    manifest = pd.DataFrame({"participant_id": IDS, "dataset": "demo", "site": [site_of[p] for p in IDS],
                             "age": AGES + [70.0, float("nan")], "sex": ["F", "M"] * 4})
    storage.write_tsv(tmp_path / "participants.tsv", manifest)
    cohort = manifest.iloc[:6].assign(n_timepoints=100, n_frames_kept=[95, 90, 80, 100, 70, 85],
                                      mean_fd=[0.1234, 0.2, 0.15, 0.05, 0.3, 0.25])
    storage.write_table(tmp_path / "cohort.parquet", cohort, kind="cohort")
    storage.write_tsv(tmp_path / "exclusions.tsv",
                      pd.DataFrame(list(exclusions), columns=["participant_id", "stage", "reason"]))
    storage.write_tsv(tmp_path / "metrics.tsv", metrics)
    preds = pd.concat([
        pd.DataFrame({"participant_id": IDS[:6], "model": model,
                      "set": ["test" if p in held_out else "cv" for p in IDS[:6]],
                      "fold": [-1 if p in held_out else f for p, f in zip(IDS[:6], [0, 0, 1, 1, 2, 2])], "age": AGES,
                      "predicted_age": pred, "predicted_age_corrected": corr})
        for model, pred, corr in [("dummy", [35.0] * 6, [35.0] * 6),
                                  ("connectome_ridge", [15, 22, 31, 37, 45, 52], [12, 20, 30, 39, 48, 57])]
    ])
    storage.write_table(tmp_path / "predictions.parquet", preds, kind="evaluated_predictions")
    cards = []
    for model in pd.unique(metrics["model"]):
        for fold in (0, 1):
            path = tmp_path / f"model-{model}" / f"fold-{fold}" / "card.json"
            storage.write_json(path, {
                "model": model, "fold": fold, "device": "cpu", "epochs_run": 3 + fold, "train_seconds": 1.5,
                "versions": {"brainage": __version__, "torch": "2.13.0", "numpy": f"2.4.{5 + fold}"},
            })
            cards.append(path)
    return {"manifest": tmp_path / "participants.tsv", "cohort": tmp_path / "cohort.parquet",
            "exclusions": tmp_path / "exclusions.tsv", "metrics": tmp_path / "metrics.tsv",
            "predictions": tmp_path / "predictions.parquet", "cards": cards}


def build(tmp_path, config=None, **kwargs):
    paths = write_inputs(tmp_path, **kwargs)
    out = tmp_path / "results" / "report.html"
    build_report(config or resolved_config(), out=out, **paths)
    return out.read_text()


@pytest.fixture(scope="module")
def inputs_once(tmp_path_factory):
    """One set of inputs shared by the tests that only read them."""
    return write_inputs(tmp_path_factory.mktemp("inputs"))


@pytest.fixture(scope="module")
def methods_text(inputs_once):
    """The methods text for a config, with the shared cohort and no model card."""
    cohort = storage.read_table(inputs_once["cohort"])
    def text(config):
        return " ".join(" ".join([p, *items]) for _, p, items in methods_paragraphs(config, cohort, [], 8))

    return text


def test_report_is_one_self_contained_file(tmp_path):
    html = build(tmp_path)
    assert html.startswith("<!DOCTYPE html>")
    assert "<script" not in html and "<link" not in html
    targets = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]*)""", html)
    assert len(targets) == 2 and all(t.startswith("data:image/png;base64,") for t in targets)
    assert "url(" not in html and "@import" not in html  # nor from the inline style
    assert [p.name for p in (tmp_path / "results").iterdir()] == ["report.html"]  # no temporary file left
    assert f"&middot; brainage {source_version()}</p>" in html  # the footer: commit-exact in a checkout
    # One embedded PNG per model, in the metrics order.
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]*)"', html)
    assert [alt for _, alt in images] == ["Predicted versus true age, dummy",
                                          "Predicted versus true age, connectome_ridge"]
    assert all(base64.b64decode(png).startswith(b"\x89PNG\r\n\x1a\n") for png, _ in images)


def test_figures_out_holds_the_embedded_pngs_one_per_model(tmp_path):
    paths = write_inputs(tmp_path)
    figures = tmp_path / "results" / "report_figures"
    figures.mkdir(parents=True)
    (figures / "old_model.png").write_bytes(b"stale")  # a model no longer listed is removed
    build_report(resolved_config(), out=tmp_path / "results" / "report.html", figures_out=figures, **paths)
    html = (tmp_path / "results" / "report.html").read_text()
    embedded = dict((alt.removeprefix("Predicted versus true age, "), base64.b64decode(png)) for png, alt in
                    re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]*)"', html))
    assert sorted(p.name for p in figures.iterdir()) == ["connectome_ridge.png", "dummy.png"]
    assert {p.stem: p.read_bytes() for p in figures.iterdir()} == embedded


def test_summary_counts_subjects_and_compares_best_model_with_dummy(tmp_path):
    html = build(tmp_path)
    assert "8 subjects were listed in the manifest, 6 were analysed and 2 were excluded." in html
    assert ("The best model was connectome_ridge, with a mean absolute error of 4.20 years against 14.50 years"
            in html)
    assert "(difference -10.30 years)" in html


def test_summary_without_dummy_and_with_dummy_only():
    one = pd.DataFrame({"participant_id": ["sub-1"]})
    no_exclusion = pd.DataFrame(columns=["participant_id", "stage", "reason"])
    assert "no dummy baseline was evaluated" in summary_text(one, one, no_exclusion, METRICS.iloc[1:])
    assert "Only the dummy baseline was evaluated (MAE 14.50 years)." in summary_text(
        one, one, no_exclusion, METRICS.iloc[:1])
    assert "No model was evaluated." in summary_text(one, one, no_exclusion, METRICS.iloc[:0])
    assert "1 were analysed and 0 were excluded." in summary_text(one, one, no_exclusion, METRICS)


def test_metrics_table_shows_every_column_rounded():
    table = metrics_table(METRICS.drop(columns="set"))
    headers = re.findall(r"<th>([^<]*)</th>", table)
    assert headers == [c for c in METRICS.columns if c != "set"]
    cells = re.findall(r"<td>([^<]*)</td>", table)
    assert cells[:12] == ["dummy", "6", "14.50", "17.08", "n/a", "-0.020", "0.775", "14.50", "n/a", "-1.000",
                          "-1.000", "0.00"]
    assert cells[12:] == ["connectome_ridge", "6", "4.20", "5.00", "0.988", "0.912", "0.225", "3.90", "0.988",
                          "-0.457", "0.012", "-10.30"]


RAW_HEADERS = ["model", "n", "mae", "rmse", "r", "r2", "mae_over_sd", "delta_mae_vs_dummy"]
CORRECTED_HEADERS = ["model", "mae_corrected", "r_corrected", "delta_age_r", "delta_age_r_corrected"]


def test_main_table_is_raw_and_the_corrected_table_holds_the_corrected_columns():
    main = metrics_sections(METRICS, "site x")
    assert re.findall(r"<th>([^<]*)</th>", main) == RAW_HEADERS
    assert re.findall(r"<td>([^<]*)</td>", main) == [
        "dummy", "6", "14.50", "17.08", "n/a", "-0.020", "0.775", "0.00",
        "connectome_ridge", "6", "4.20", "5.00", "0.988", "0.912", "0.225", "-10.30"]
    section = corrected_section(METRICS)
    table = section[section.index("<table"):section.index("</table>")]
    assert re.findall(r"<th>([^<]*)</th>", table) == CORRECTED_HEADERS
    assert re.findall(r"<td>([^<]*)</td>", table) == ["dummy", "14.50", "n/a", "-1.000", "-1.000",
                                                      "connectome_ridge", "3.90", "0.988", "-0.457", "0.012"]
    assert section.startswith(f'<h2 id="bias-corrected">{CORRECTED_HEADING}</h2>\n<p>{escape(CORRECTED_TEXT)}</p>')
    assert "No age-bias correction was applied" not in section
    assert "No age-bias correction was applied in this run" in corrected_section(METRICS, applied=False)
    # Intervals of corrected columns, if a metrics table had them, would not reach the main table either.
    with_ci = METRICS.assign(mae_corrected_ci_low=1.0, mae_corrected_ci_high=2.0)
    assert metrics_sections(with_ci, "site x") == main


def test_corrected_table_has_a_set_column_with_held_out_rows():
    table = corrected_table(METRICS_HELD)
    assert re.findall(r"<th>([^<]*)</th>", table) == ["model", "set", *CORRECTED_HEADERS[1:]]
    assert re.findall(r"<td>([^<]*)</td>", table) == [
        "dummy", "cross-validation", "14.50", "n/a", "-1.000", "-1.000",
        "connectome_ridge", "cross-validation", "3.90", "0.988", "-0.457", "0.012",
        "dummy", "held-out test", "21.25", "n/a", "-1.000", "-1.000",
        "connectome_ridge", "held-out test", "5.43", "0.500", "-0.600", "-0.046"]
    main = metrics_sections(METRICS_HELD, "site x")
    assert all(column not in main for column in CORRECTED_HEADERS[1:])


def test_page_leads_with_raw_accuracy_then_the_corrected_section(tmp_path):
    page = build(tmp_path)
    raw_at, corrected_at = page.index("<h2>Metrics (raw predictions)</h2>"), page.index(f">{CORRECTED_HEADING}</h2>")
    assert raw_at < corrected_at < page.index("<h2>Excluded subjects")
    assert escape(CORRECTED_TEXT) in page and escape(CORRECTED_LEGEND) in page
    assert "mae_corrected" not in page[raw_at:corrected_at]
    assert "<th>mae_corrected</th>" in page[corrected_at:]
    for text in ("brain-age delta analyses", "need a delta uncorrelated with age", "MAE grows by construction",
                 "roughly by the factor 1/a", "not a measure of accuracy", "on the outer test folds",
                 "before and after correction", "near 0 after it"):
        assert text in CORRECTED_TEXT


def test_best_model_is_chosen_on_raw_mae_not_corrected():
    one = pd.DataFrame({"participant_id": ["sub-1"]})
    no_exclusion = pd.DataFrame(columns=["participant_id", "stage", "reason"])
    # roi_gru has the lower corrected MAE, connectome_ridge the lower raw MAE: the raw one wins.
    metrics = pd.concat([METRICS, METRICS.iloc[[1]].assign(model="roi_gru", mae=5.0, mae_corrected=1.0)],
                        ignore_index=True)
    text = summary_text(one, one, no_exclusion, metrics)
    assert "The best model was connectome_ridge, with a mean absolute error of 4.20 years" in text


def test_report_contains_metrics_values(tmp_path):
    html = build(tmp_path)
    for value in ["4.20", "0.988", "0.912", "-10.30", "17.08"]:
        assert f"<td>{value}</td>" in html


def test_each_excluded_subject_is_listed_with_its_reason(tmp_path):
    html = build(tmp_path)
    assert "<h2>Excluded subjects (2)</h2>" in html
    for pid, stage, reason in EXCLUDED:
        row = re.search(rf"<td>{pid}</td>\s*<td>{stage}</td>\s*<td>([^<]*)</td>", html)
        assert row is not None and row.group(1) == reason.replace("<", "&lt;").replace(">", "&gt;")
    assert NO_EXCLUSION not in html


def test_no_exclusion_says_so(tmp_path):
    html = build(tmp_path, exclusions=[])
    assert "<h2>Excluded subjects (0)</h2>" in html
    assert f'<p class="none">{NO_EXCLUSION}</p>' in html
    assert exclusions_table(pd.DataFrame(columns=["participant_id", "stage", "reason"])).endswith(
        f"{NO_EXCLUSION}</p>")


def test_qc_table_rows_and_collapse():
    cohort = pd.DataFrame({"participant_id": ["sub-2", "sub-1"], "site": ["B", "A"], "age": [30.04, 12.36],
                           "n_frames_kept": [95, 60], "n_timepoints": [100, 100], "mean_fd": [0.1234, None]})
    table = qc_table(cohort)
    assert table.startswith("<details open><summary>Per-subject QC of the 2 analysed subjects</summary>")
    cells = re.findall(r"<td>([^<]*)</td>", table)
    assert cells == ["sub-1", "A", "12.4", "60 / 100", "n/a", "sub-2", "B", "30.0", "95 / 100", "0.123"]
    long = pd.concat([cohort] * 13, ignore_index=True)  # 26 rows: starts collapsed
    assert qc_table(long).startswith("<details><summary>Per-subject QC of the 26 analysed subjects")


def test_html_from_data_is_escaped(tmp_path):
    evil = "<script>alert(1)</script>"
    html = build(tmp_path, sites=(evil, "siteB"))
    assert evil not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # in the QC table and the methods text


def test_panel_titles_carry_mae_and_r():
    assert panel_titles(METRICS.iloc[1]) == ("raw: MAE 4.20 y, r 0.99", "bias-corrected, for delta analyses: delta-age r 0.01")
    assert panel_titles(METRICS.iloc[0]) == ("raw: MAE 14.50 y, r n/a", "bias-corrected, for delta analyses: delta-age r -1.00")


def test_figures_one_per_model_deterministic_and_site_colours_stable(inputs_once):
    preds = storage.read_table(inputs_once["predictions"])
    cohort = storage.read_table(inputs_once["cohort"])
    first = model_figures(preds, cohort, METRICS)
    assert list(first) == ["dummy", "connectome_ridge"]
    assert model_figures(preds, cohort, METRICS) == first  # byte-identical PNGs
    shifted = preds.assign(predicted_age_corrected=preds["predicted_age_corrected"] + 3.0)
    assert model_figures(shifted, cohort, METRICS)["connectome_ridge"] != first["connectome_ridge"]
    colours = site_colours(["b", "a", "b", "c"])
    assert list(colours) == ["a", "b", "c"] and len(set(colours.values())) == 3
    assert site_colours(["c", "a", "b"]) == colours


def test_methods_describe_the_default_run(methods_text):
    text = methods_text(resolved_config())
    for expected in [
        "embedded synthetic demo cohort", "60 subjects generated over the sites siteA, siteB",
        "Of the 8 subjects listed in the manifest, 6 were analysed, from 2 sites (siteA, siteB)",
        "aged 10.0 to 60.0 years (mean 35.0, SD 18.7; sex F 3, M 3)",
        "denoising preset simple", "24 motion + WM and CSF means + fMRIPrep's discrete-cosine high-pass regressors",
        "framewise displacement above 0.5 mm", "standardised DVARS above 3 ",
        "shorter than 5 frames", "fewer than 40 frames", "band-pass filtering between 0.01 and 0.1 Hz",
        "linear detrending", "z-scored (sample standard deviation)", "100-region atlas made by k-means",
        "block-averaged to 8 mm voxels from the 4 mm BOLD grid", "5-fold cross-validation stratified by age",
        "seed 42", "cross-fitted predictions of all that fold's training subjects, never on its test subjects",
        "RidgeCV among 0.1, 1, 10, 100, 1000, 10000",
    ]:
        assert expected in text, expected


def _set(config, dotted, value):
    node = config
    *parents, key = dotted.split(".")
    for parent in parents:
        node = node[parent]
    node[key] = value


@pytest.mark.parametrize("key, value, expected", [
    ("extract.fd_threshold", 0.3, "framewise displacement above 0.3 mm"),
    ("extract.std_dvars_threshold", 1.5, "standardised DVARS above 1.5"),
    ("extract.scrub_min_segment", 7, "shorter than 7 frames"),
    ("extract.scrub", False, "No frames were censored"),
    ("extract.denoise", "36P", "24 motion + WM, CSF and global signal each with derivative, square and squared "
                               "derivative (36 regressors)"),
    ("extract.denoise", "acompcor", "12 motion + 5 WM and 5 CSF aCompCor components"),
    ("extract.fd_threshold", None, "Framewise displacement was not used for censoring"),
    ("extract.min_seconds", 321, "less than 321 s of clean data"),
    ("extract.min_region_coverage", 0.8, "less than 80% of its volume"),
    ("extract.on_region_loss", "warn", "kept with a warning (extract.on_region_loss warn)"),
    ("extract.high_pass", None, "low-pass filtering at 0.1 Hz"),
    ("extract.low_pass", None, "high-pass filtering at 0.01 Hz"),
    ("extract.detrend", False, "no detrending"),
    ("extract.standardize", False, "Region series were not standardised"),
    ("extract.min_frames", 60, "fewer than 60 frames"),
    ("extract.volume_voxel_size", 12, "block-averaged to 12 mm voxels"),
    ("extract.volume_scaling", "voxel", "z-scored per voxel over time"),
    ("atlases", [{"name": "kmeans", "n_regions": 200}], "200-region atlas"),
    ("atlases", [{"name": "file", "path": "my.nii.gz"}], "the label image my.nii.gz"),
    ("atlases", [{"name": "kmeans", "n_regions": 100}, {"name": "msdl"}], "2 atlases from the same cleaned data"),
    ("dataset.n_folds", 3, "3-fold cross-validation"),
    ("dataset.group_by_site", True, "grouped by site"),
    ("train.inner_folds", 7, "inner 7-fold split of the training subjects"),
    ("dataset.test_sites", ["siteB"], "The subjects of the site siteB (3 subjects) were held out"),
    ("dataset.test_datasets", ["demo"], "The subjects of the dataset demo (6 subjects) were held out"),
    ("evaluate.bias_correction", False, "No age-bias correction was applied"),
    ("seed", 7, "single workflow seed 7"),
    ("inputs.source", "fmriprep", "The data were fMRIPrep derivatives of the demo dataset"),
    ("demo.n_subjects", 12, "12 subjects generated"),
    ("demo.tr", 0.8, "repetition time of 0.8 s"),
])
def test_each_parameter_changes_the_methods_text(methods_text, key, value, expected):
    config = resolved_config()
    before = methods_text(config)
    _set(config, key, value)
    after = methods_text(config)
    assert after != before
    assert expected in after and expected not in before


def test_methods_state_the_inner_folds_behind_the_bias_line(methods_text):
    config = resolved_config()
    config["train"]["inner_folds"] = 4
    text = methods_text(config)
    assert ("an inner 4-fold split of the training subjects (stratified by age) gave each training subject a "
            "cross-fitted prediction: every model was fitted on all inner folds but one and predicted the one left "
            "out; the torch models (roi_gru, cnn_rnn) stopped early on 20 % of each fit's own training subjects; "
            "the outer test fold was predicted by the mean of these 4 fitted models, the same models the bias line "
            "and the stack were fitted on. Every model, the dummy included, was treated alike.") in text
    assert ("linear fit predicted = a * age + b on the cross-fitted predictions of all that fold's training "
            "subjects, never on its test subjects") in text
    config["dataset"]["group_by_site"] = True
    assert "an inner 4-fold split of the training subjects (grouped by site)" in methods_text(config)
    del config["train"]["inner_folds"]  # the schema default
    config["train"]["models"] = ["dummy", "connectome_ridge"]
    text = methods_text(config)
    assert "an inner 5-fold split of the training subjects (grouped by site)" in text
    assert "torch models" not in text and "stopped early" not in text


STACK_WORDS = "non-negative least squares with intercept"


def test_stack_sentence_appears_exactly_when_a_stack_is_listed(methods_text):
    config = resolved_config()
    assert config["train"]["models"][-1] == "stack"
    text = methods_text(config)
    assert ("The stack combined every other listed model but the dummy (connectome_ridge, roi_gru, cnn_rnn) as an "
            "intercept plus non-negative weights times their predicted ages (non-negative least squares with "
            "intercept, scikit-learn LinearRegression(positive=True)), fitted within each outer fold on the base "
            "models' cross-fitted predictions of that fold's training subjects and applied to their predictions of "
            "its test subjects, so the test folds never steered the weights or the choice of models") in text
    assert "stack: an intercept plus non-negative weights times the predicted ages of connectome_ridge, roi_gru, " \
           "cnn_rnn" in text
    config["models"]["stack"]["models"] = ["roi_gru"]
    assert "The stack combined its configured base models (roi_gru)" in methods_text(config)
    config["train"]["models"] = ["dummy", "connectome_ridge", "roi_gru"]
    assert STACK_WORDS not in methods_text(config) and "The stack" not in methods_text(config)
    # A variant of the stack, with base models of its own.
    config["variants"] = {"blend": {"model": "stack", "models": ["connectome_ridge", "roi_gru"]}}
    assert STACK_WORDS not in methods_text(config)  # defined, not listed
    config["train"]["models"].append("blend")
    text = methods_text(config)
    assert "The stack blend combined its configured base models (connectome_ridge, roi_gru)" in text
    assert "blend: a variant of stack (models=[connectome_ridge, roi_gru]): an intercept plus" in text
    # A selecting stack: the choice of one base by inner cross-validation, said as such.
    config["variants"]["lr_choice"] = {"model": "stack", "method": "select", "models": ["connectome_ridge", "roi_gru"]}
    config["train"]["models"].append("lr_choice")
    text = methods_text(config)
    assert ("The stack lr_choice chose among its configured base models (connectome_ridge, roi_gru) the one model "
            "with the lowest mean absolute error on its cross-fitted predictions of the training subjects") in text
    assert "the one of connectome_ridge, roi_gru with the lowest cross-fitted MAE on the training subjects" in text


COMBAT_WORDS = "site effects were removed from the connectivity features with ComBat"


def test_combat_sentence_appears_exactly_when_a_listed_ridge_harmonises(methods_text):
    config = resolved_config()
    assert COMBAT_WORDS not in methods_text(config) and "ComBat" not in methods_text(config)
    config["models"]["connectome_ridge"]["harmonize"] = "combat"
    text = methods_text(config)
    assert (f"For connectome_ridge, {COMBAT_WORDS} (neuroCombat 0.2.12; Fortin et al. 2018, NeuroImage "
            "167:104), learned within each fit on its training subjects' features with age as a preserved "
            "covariate; test subjects of sites seen in training were harmonised with those estimates and the age "
            "term at the training mean age (test ages were never used). Test subjects of sites absent from the "
            "training subjects (or with fewer than 2 of them) were left unharmonised: an unseen site's location "
            "and scale cannot be estimated with age as a covariate without its subjects' ages, and estimating them "
            "from its features alone would remove that site's real age difference.") in text
    assert "with site effects removed from the features by ComBat" in text  # the model's own item
    config["dataset"]["group_by_site"] = True
    assert ("were left unharmonised (with folds grouped by site, every cross-validation test subject)"
            in methods_text(config))
    config["dataset"]["test_sites"] = ["siteB"]
    assert ("were left unharmonised (with folds grouped by site, every cross-validation test subject; the "
            "held-out sites' subjects)") in methods_text(config)
    # A variant with ComBat: named, listed or not.
    config = resolved_config()
    config["variants"] = {"ridge_combat": {"model": "connectome_ridge", "harmonize": "combat"}}
    assert COMBAT_WORDS not in methods_text(config)  # defined, not listed
    config["train"]["models"].append("ridge_combat")
    text = methods_text(config)
    assert f"For ridge_combat, {COMBAT_WORDS}" in text and "For connectome_ridge," not in text
    assert "ridge_combat: a variant of connectome_ridge (harmonize=combat): correlation functional" in text
    config["variants"]["ridge_combat"]["harmonize"] = "none"
    assert COMBAT_WORDS not in methods_text(config)


def test_variants_are_described_by_their_model_and_what_differs(methods_text):
    config = resolved_config()
    config["variants"] = {"ridge_tangent": {"model": "connectome_ridge", "kind": "tangent", "target": "log_age"},
                          "ridge_same": {"model": "connectome_ridge", "kind": "correlation"}}
    config["train"]["models"] = ["dummy", "ridge_tangent", "ridge_same"]
    text = methods_text(config)
    assert ("ridge_tangent: a variant of connectome_ridge (kind=tangent; target=log_age): tangent functional "
            "connectivity between the regions") in text
    assert "fitted on log(age) with predictions mapped back to years (parameters: alphas=" in text
    assert "ridge_same: a variant of connectome_ridge (the parameters of models.connectome_ridge): correlation" in text
    assert "3 models were evaluated:" in text


def test_file_atlas_is_named(methods_text):
    config = resolved_config()
    config["atlases"] = [{"name": "file", "path": "resources/atlases/CC200.nii.gz"}]
    assert "the label image resources/atlases/CC200.nii.gz (each non-zero integer label one region)" in methods_text(config)


def test_fmriprep_source_names_its_folder_and_participants(methods_text):
    config = resolved_config()
    config["inputs"].update(source="fmriprep", dataset="abide", derivatives="/data/abide/fmriprep",
                            participants="/data/abide/participants.tsv", res="2")
    text = methods_text(config)
    assert ("fMRIPrep derivatives of the abide dataset (/data/abide/fmriprep; task-rest, "
            "space-MNI152NLin2009cAsym, res-2), with age, sex and site from /data/abide/participants.tsv.") in text
    assert "from the res-2 BOLD grid" in text and "synthetic" not in text


def test_methods_name_the_res_label_of_the_files_actually_read(methods_text):
    # The demo writes its BOLD at demo.voxel_size (res-4), whatever inputs.res says.
    config = resolved_config()
    config["demo"]["voxel_size"], config["inputs"]["res"] = 4, "2"
    text = methods_text(config)
    assert "space-MNI152NLin2009cAsym, res-4)" in text and "res-2" not in text
    config["inputs"]["source"] = "fmriprep"
    text = methods_text(config)
    assert "space-MNI152NLin2009cAsym, res-2)" in text and "from the res-2 BOLD grid" in text and "res-4" not in text


def test_every_model_parameter_changes_the_methods_text(methods_text):
    config = resolved_config()
    # Every registered model listed (the demo's default list leaves some out), the stack last.
    config["train"]["models"] = [m for m in config["models"] if m != "stack"] + ["stack"]
    before = methods_text(config)
    for model, params in config["models"].items():
        for key, value in params.items():
            changed = copy.deepcopy(config)
            new = (not value if isinstance(value, bool) else [*value, 3] if isinstance(value, list)
                   else "tangent" if key == "kind" else "lstm" if key == "rnn" else "combat" if key == "harmonize"
                   else "log_age" if key == "target" else value * 3 if value else 0.5)
            changed["models"][model][key] = new
            assert methods_text(changed) != before, f"{model}.{key}"
    config["train"]["models"] = [m for m in config["train"]["models"] if m != "cnn_rnn"]
    n = len(config["train"]["models"])
    assert "cnn_rnn" not in methods_text(config) and f"{n} models were evaluated:" in methods_text(config)


def test_methods_report_training_and_versions_from_cards(tmp_path):
    html = build(tmp_path)
    assert "2 folds trained on cpu, 3-4 epochs run, 3.0 s of training in total." in html
    assert f"brainage {__version__}, numpy 2.4.5 / 2.4.6, torch 2.13.0" in html  # as the cards recorded them
    assert f"This report was made with brainage {source_version()}." in html
    assert re.search(r"<li>roi_gru: [^<]*No model card was found\.</li>", html)  # configured, never trained
    assert "5 models were evaluated:" in html and html.count("<li>") == 5


def test_cli_builds_the_report(tmp_path):
    paths = write_inputs(tmp_path)
    out = tmp_path / "report.html"
    argv = ["build", "--config", json.dumps(resolved_config())]
    for name in ["manifest", "cohort", "exclusions", "metrics", "predictions"]:
        argv += [f"--{name}", str(paths[name])]
    argv += ["--cards", *map(str, paths["cards"]), "--out", str(out)]
    assert main(argv) == 0
    assert "connectome_ridge" in out.read_text()


def test_cli_reports_bad_input_with_exit_code_1(tmp_path, capsys):
    paths = write_inputs(tmp_path)
    pd.DataFrame({"participant_id": ["sub-001"]}).to_csv(paths["manifest"], sep="\t", index=False)
    argv = ["build", "--config", "{}", "--manifest", str(paths["manifest"])]
    for name in ["cohort", "exclusions", "metrics", "predictions"]:
        argv += [f"--{name}", str(paths[name])]
    argv += ["--cards", str(paths["cards"][0]), "--out", str(tmp_path / "r.html")]
    assert main(argv) == 1
    assert "report config: missing seed, inputs" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()
    with pytest.raises(SystemExit):
        main(argv[:-4] + ["--cards", str(tmp_path / "nope.json"), "--out", str(tmp_path / "r.html")])


def test_config_missing_keys_are_listed(tmp_path):
    config = resolved_config()
    del config["extract"]["fd_threshold"]
    del config["dataset"]
    with pytest.raises(ConfigError, match=r"missing extract\.fd_threshold, dataset; expected the full resolved"):
        build(tmp_path, config=config)
    config = resolved_config()
    del config["demo"]["tr"]
    with pytest.raises(ConfigError, match=r"missing demo\.tr"):
        build(tmp_path, config=config)
    for atlases in (None, [], [{"n_regions": 5}], {"name": "kmeans"}):
        config = resolved_config()
        config["atlases"] = atlases
        with pytest.raises(ConfigError, match=r"missing atlases \(a list of atlas specs, each with a name\)"):
            build(tmp_path, config=config)


@pytest.mark.parametrize("name, frame, message", [
    ("manifest", pd.DataFrame({"participant_id": ["sub-001"], "age": [3]}),
     r"participants\.tsv: table lacks columns \['dataset', 'site', 'sex'\].*found \['participant_id', 'age'\]"),
    ("exclusions", pd.DataFrame({"participant_id": ["sub-001"]}), r"exclusions\.tsv: table lacks columns \['stage'"),
    ("metrics", METRICS.drop(columns=["rmse", "r2"]), r"metrics\.tsv: table lacks columns \['rmse', 'r2'\]"),
    ("metrics", METRICS.iloc[:1], r"metrics\.tsv: no row for model\(s\) connectome_ridge found in .*predictions"),
])
def test_bad_tables_are_rejected(tmp_path, name, frame, message):
    paths = write_inputs(tmp_path)
    storage.write_tsv(paths[name], frame)
    with pytest.raises(InputDataError, match=message):
        build_report(resolved_config(), out=tmp_path / "r.html", **paths)


def test_empty_tsv_and_bad_parquet_inputs_are_rejected(tmp_path):
    paths = write_inputs(tmp_path)
    def run(**changed):
        build_report(resolved_config(), out=tmp_path / "r.html", **{**paths, **changed})

    (tmp_path / "empty.tsv").write_text("")
    with pytest.raises(InputDataError, match=r"empty\.tsv: empty file, expected a header row"):
        run(exclusions=tmp_path / "empty.tsv")
    with pytest.raises(ValueError, match=r"holds 'evaluated_predictions', expected 'cohort'"):
        run(cohort=paths["predictions"])
    cohort = storage.read_table(paths["cohort"])
    storage.write_table(tmp_path / "c.parquet", cohort.drop(columns=["mean_fd"]), kind="cohort")
    with pytest.raises(InputDataError, match=r"c\.parquet: table lacks columns \['mean_fd'\]"):
        run(cohort=tmp_path / "c.parquet")
    storage.write_table(tmp_path / "c.parquet", cohort.iloc[:4], kind="cohort")
    with pytest.raises(InputDataError, match=r"subject\(s\) sub-005, sub-006 not in the cohort .*c\.parquet"):
        run(cohort=tmp_path / "c.parquet")
    storage.write_json(tmp_path / "card.json", [1, 2])
    with pytest.raises(InputDataError, match=r"card\.json: expected a JSON object \(model card\), found list"):
        run(cards=[tmp_path / "card.json"])


# --- held-out (external) test set -------------------------------------------------------

HELD_OUT = ("sub-003", "sub-006")  # the siteB subjects with sites=("siteA", "siteA", "siteB")
HELD_SITES = ("siteA", "siteA", "siteB")
METRICS_HELD = pd.concat([METRICS, pd.DataFrame({
    "model": ["dummy", "connectome_ridge"], "set": ["test", "test"], "n": [2, 2], "mae": [21.25, 6.789],
    "rmse": [22.0, 7.0], "r": [float("nan"), 0.5], "r2": [-0.5, 0.25], "mae_over_sd": [1.5, 0.48],
    "mae_corrected": [21.25, 5.4321], "r_corrected": [float("nan"), 0.5],
    "delta_age_r": [-1.0, -0.6], "delta_age_r_corrected": [-1.0, -0.0456], "delta_mae_vs_dummy": [0.0, -14.461],
})], ignore_index=True)


def _held_config():
    config = resolved_config()
    config["dataset"]["test_sites"] = ["siteB"]
    return config


def test_report_with_held_out_set_shows_both_sections(tmp_path):
    html = build(tmp_path, config=_held_config(), sites=HELD_SITES, metrics=METRICS_HELD, held_out=HELD_OUT)
    cv_at, test_at = html.index("<h3>Cross-validation</h3>"), html.index('<h3 id="held-out-test">Held-out test (site siteB)</h3>')
    methods_at = html.index("<h2>Methods</h2>")
    assert cv_at < test_at < methods_at
    cv_cells = re.findall(r"<td>([^<]*)</td>", html[cv_at:test_at])
    test_cells = re.findall(r"<td>([^<]*)</td>", html[test_at:methods_at].split("</table>")[0])
    assert cv_cells[8:] == ["connectome_ridge", "6", "4.20", "5.00", "0.988", "0.912", "0.225", "-10.30"]
    assert test_cells == ["dummy", "2", "21.25", "22.00", "n/a", "-0.500", "1.500", "0.00",
                          "connectome_ridge", "2", "6.79", "7.00", "0.500", "0.250", "0.480", "-14.46"]
    corrected_at = html.index(f">{CORRECTED_HEADING}</h2>")
    assert test_at < corrected_at < methods_at
    assert "<th>set</th>" not in html[:corrected_at]  # the main tables: one per set
    corrected = html[corrected_at:methods_at].split("</table>")[0]
    assert re.findall(r"<td>([^<]*)</td>", corrected)[-6:] == [
        "connectome_ridge", "held-out test", "5.43", "0.500", "-0.600", "-0.046"]
    assert ("On the held-out test set (2 subjects), connectome_ridge had a mean absolute error of 6.79 years "
            "against 21.25 years for the dummy.") in html
    assert "The subjects of the site siteB (2 subjects) were held out as an external test set" in html
    assert "mean of the 5 fold models&#x27; predictions" in html
    assert "fitted per model on the pooled out-of-fold predictions of the cross-validation subjects" in html
    assert html.count("triangles = held-out test subjects (mean of the fold models)") == 2


def test_report_without_held_out_set_has_no_test_section(tmp_path):
    html = build(tmp_path)
    assert "held-out" not in html.lower() and "Cross-validation</h3>" not in html and "triangles" not in html
    assert html.count("<table class=\"dataframe metrics\">") == 1


def test_metrics_sections_without_test_rows_is_the_plain_table():
    raw = METRICS.drop(columns=["set", "mae_corrected", "r_corrected", "delta_age_r", "delta_age_r_corrected"])
    assert metrics_sections(METRICS, "site x") == metrics_table(raw)
    assert metrics_table(raw) in metrics_sections(METRICS_HELD, "site x")


def test_figures_mark_held_out_subjects_and_title_their_metrics(tmp_path):
    paths = write_inputs(tmp_path, sites=HELD_SITES, metrics=METRICS_HELD, held_out=HELD_OUT)
    preds, cohort = storage.read_table(paths["predictions"]), storage.read_table(paths["cohort"])
    marked = model_figures(preds, cohort, METRICS_HELD)
    assert list(marked) == ["dummy", "connectome_ridge"]
    # Same points, all drawn as cross-validation subjects: a different picture.
    assert model_figures(preds.assign(set="cv"), cohort, METRICS)["connectome_ridge"] != marked["connectome_ridge"]
    assert panel_titles(METRICS_HELD.iloc[1], METRICS_HELD.iloc[3]) == (
        "raw: MAE 4.20 y, r 0.99\nheld-out: MAE 6.79 y, r 0.50",
        "bias-corrected, for delta analyses: delta-age r 0.01\nheld-out: delta-age r -0.05",
    )


def test_held_out_predictions_need_held_out_metrics(tmp_path):
    paths = write_inputs(tmp_path, sites=HELD_SITES, metrics=METRICS, held_out=HELD_OUT)
    with pytest.raises(InputDataError, match=r"metrics\.tsv: no row for connectome_ridge \(set test\), dummy \(set test\)"):
        build_report(_held_config(), out=tmp_path / "r.html", **paths)


# --- extraction QC and atlas folders ----------------------------------------------------------

# Extraction exclusions as brainage.extract writes them (too little clean data; regions lost).
CLEAN_TIME_REASON = ("…/sub-007_desc-confounds_timeseries.tsv: 52 of 200 frames left after censoring (FD > 0.5 mm "
                     "or std DVARS > 3) = 104 s of clean data at TR 2 s; need 40 frames (extract.min_frames) and "
                     "120 s (extract.min_seconds)")
LOST_REASON = ("…/sub-008_desc-brain_mask.nii.gz: regions lost on this brain mask (atlas kmeans100: 2 of 100 regions "
               "below 0.5 coverage: roi_007 (label 7): 12% inside the brain mask; roi_031 (label 31): vanished when "
               "resampled to the 4 mm BOLD grid); extract.min_region_coverage sets the threshold, "
               "extract.on_region_loss: warn keeps such runs")


def write_extraction(tmp_path):
    """QC records of the 6 analysed subjects (60..160 s clean) and the 2 extraction exclusions; one atlas folder."""
    records = []
    for i, pid in enumerate(IDS[:6]):
        records.append({"participant_id": pid, "stage": "extract", "status": "included", "reason": None,
                        "seconds_kept": 60.0 + 20 * i, "fd_dvars_r": 0.1 * i, "fd_dvars_r_clean": 0.01 * i,
                        "atlases": {"kmeans100": {"kind": "labels", "n_regions": 100, "lost_regions": [],
                                                  "min_coverage": 0.8}}})
    records.append({"participant_id": "sub-007", "stage": "extract", "status": "excluded",
                    "reason": CLEAN_TIME_REASON, "atlases": {"kmeans100": {"lost_regions": []}}})
    records.append({"participant_id": "sub-008", "stage": "extract", "status": "excluded", "reason": LOST_REASON,
                    "atlases": {"kmeans100": {"lost_regions": ["roi_007", "roi_031"], "min_coverage": 0.0,
                                              "lost_coverage": [0.12, 0.0]}}})
    paths = []
    for record in records:
        paths.append(tmp_path / "extract" / f"{record['participant_id']}_qc.json")
        storage.write_json(paths[-1], record)
    atlas = tmp_path / "atlases" / "kmeans100"
    storage.write_json(atlas / "atlas.json", {"id": "kmeans100", "name": "kmeans", "kind": "labels",
                                              "image": "atlas.nii.gz", "source": "generated",
                                              "spec": {"name": "kmeans", "n_regions": 100, "id": "kmeans100"}})
    storage.write_tsv(atlas / "labels.tsv", pd.DataFrame({"index": range(1, 101),
                                                         "name": [f"roi_{i:03d}" for i in range(1, 101)]}))
    return paths, atlas


def test_report_shows_extraction_qc_exclusions_and_atlases(tmp_path):
    paths = write_inputs(tmp_path, exclusions=[("sub-007", "extract", CLEAN_TIME_REASON),
                                               ("sub-008", "extract", LOST_REASON)])
    qc_paths, atlas = write_extraction(tmp_path)
    argv = ["build", "--config", json.dumps(resolved_config())]
    for name in ["manifest", "cohort", "exclusions", "metrics", "predictions"]:
        argv += [f"--{name}", str(paths[name])]
    argv += ["--cards", *map(str, paths["cards"]), "--extract-qc", *map(str, qc_paths), "--atlases", str(atlas),
             "--out", str(tmp_path / "report.html")]
    assert main(argv) == 0
    html = (tmp_path / "report.html").read_text()
    assert "<h2>Excluded subjects (2)</h2>" in html
    for pid, reason in (("sub-007", CLEAN_TIME_REASON), ("sub-008", LOST_REASON)):
        row = re.search(rf"<td>{pid}</td>\s*<td>extract</td>\s*<td>([^<]*)</td>", html)
        assert row is not None and row.group(1) == reason.replace(">", "&gt;")
    qc = html[html.index("<h2>Quality control</h2>"):html.index("<h2>Methods</h2>")]
    # Analysed subjects keep 60, 80, ..., 160 s: median 110 s; r before 0.0..0.5 (median 0.25), after 0.025.
    assert "Clean data per analysed run: median 110 s (range 60-160 s)." in qc
    assert "median r 0.25 before denoising" in qc and "and 0.03 after" in qc
    assert ("2 regions of 1 atlas fell below 50% coverage (extract.min_region_coverage) in at least one of the 8 "
            "extracted runs; 1 run was excluded for them. 1 run was excluded for too little clean data") in qc
    assert re.findall(r"<td>([^<]*)</td>", qc[qc.index("lost-regions"):]) == [
        "kmeans100", "roi_007", "1", "12", "kmeans100", "roi_031", "1", "0"]
    assert "<td>sub-001</td>" in qc and "<th>clean data (s)</th>" in qc
    assert "100-region atlas made by k-means clustering" in html and "(atlas-kmeans100)" in html


def test_atlas_folders_must_be_the_configured_atlases(tmp_path):
    paths = write_inputs(tmp_path)
    _, atlas = write_extraction(tmp_path)
    config = resolved_config()
    config["atlases"] = [{"name": "msdl"}]
    with pytest.raises(InputDataError, match=r"kmeans100 hold the atlases \['kmeans'\], but config atlases lists "
                                             r"\['msdl'\]; pass one folder per configured atlas, in config order"):
        build_report(config, out=tmp_path / "r.html", atlases=[atlas], **paths)
    config["atlases"] = [{"name": "kmeans", "n_regions": 100}, {"name": "msdl"}]
    with pytest.raises(InputDataError, match=r"\['kmeans'\], but config atlases lists \['kmeans', 'msdl'\]"):
        build_report(config, out=tmp_path / "r.html", atlases=[atlas], **paths)


def test_metrics_cells_carry_their_bootstrap_interval_and_the_methods_say_how():
    from brainage.report.methods import validation_text
    from brainage.report.tables import metrics_table as render

    metrics = pd.DataFrame({"model": ["dummy", "connectome_ridge"], "n": [60, 60], "mae": [17.976, 6.31],
                            "mae_ci_low": [16.1, 5.004], "mae_ci_high": [19.9, 7.6],
                            "r": [float("nan"), 0.9534], "r_ci_low": [float("nan"), 0.93], "r_ci_high": [float("nan"), 0.97],
                            "delta_mae_vs_dummy": [0.0, -11.666], "delta_mae_vs_dummy_ci_low": [0.0, -13.2],
                            "delta_mae_vs_dummy_ci_high": [0.0, -10.1]})
    page = render(metrics)
    assert "6.31 [5.00, 7.60]" in page and "0.953 [0.930, 0.970]" in page and "-11.67 [-13.20, -10.10]" in page
    assert "17.98 [16.10, 19.90]" in page and ">n/a<" in page  # the dummy's r has no interval
    assert "ci_low" not in page and "ci_high" not in page
    config = yaml.safe_load((Path(__file__).parents[2] / "config" / "config.yaml").read_text())
    config["evaluate"]["bootstrap_resamples"] = 2000
    assert "95 % percentile bootstrap intervals (2000 resamples of the subjects" in validation_text(config)
    config["evaluate"]["bootstrap_resamples"] = 0
    assert "bootstrap" not in validation_text(config)


def test_site_section_gives_each_sites_n_age_range_and_each_models_mae_and_r():
    from brainage.report.tables import site_section

    ids = [f"sub-{i}" for i in range(6)]
    cohort = pd.DataFrame({"participant_id": ids, "site": ["B", "B", "B", "A", "A", "A"]})
    age = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]
    ridge = [12.0, 18.0, 33.0, 40.0, 50.0, 66.0]  # site B errors 2, 2, 3; site A 0, 0, 6
    rows = [(pid, "connectome_ridge", "cv", a, p) for pid, a, p in zip(ids, age, ridge)]
    rows += [(pid, "dummy", "cv", a, 35.0) for pid, a in zip(ids, age)]
    rows += [("sub-9", "dummy", "test", 70.0, 35.0)]  # held-out rows are not per-site CV accuracy
    predictions = pd.DataFrame(rows, columns=["participant_id", "model", "set", "age", "predicted_age"])
    page = site_section(predictions, cohort, ["dummy", "connectome_ridge"])
    table = pd.read_html(io.StringIO(page))[0]
    assert table["site"].tolist() == ["A", "B"]
    assert table["n"].tolist() == [3, 3] and table["age range"].tolist() == ["40.0-60.0", "10.0-30.0"]
    # A: |e| 0, 0, 6 -> 2.00; r of (40, 50, 60) with (40, 50, 66): 260 / sqrt(200 * 1400 / 3 ... )
    r_a = np.corrcoef([40, 50, 60], [40, 50, 66])[0, 1]
    r_b = np.corrcoef([10, 20, 30], [12, 18, 33])[0, 1]
    assert table["connectome_ridge"].tolist() == [f"2.00 ({r_a:.2f})", f"{7 / 3:.2f} ({r_b:.2f})"]
    assert table["dummy"].tolist() == ["15.00 (n/a)", "15.00 (n/a)"]
    assert site_section(predictions, cohort.assign(site="A"), ["dummy"]) == ""


def test_connectivity_readers_are_described_with_their_values_and_how_they_were_chosen(methods_text):
    config = resolved_config()
    config["train"]["models"] = ["dummy", "roi_conn", "cnn_conn"]
    config["models"]["roi_conn"]["shrinkage"] = 0.5
    text = methods_text(config)
    assert "shrunk to (1 - s) R + s I with s = 0.5 and mapped to the tangent space by the matrix logarithm" in text
    assert "shrunk to (1 - s) R + s I with s = 0.75" in text  # cnn_conn keeps its default
    assert "trained with AdamW (learning rate 0.001" in text
    assert ("fixed by the configuration, not fitted to these data (brainage's defaults were chosen by inner "
            "cross-validation of ABIDE I training folds") in text
    assert text.count("training is kept only where it beats the ridge start on those subjects") == 2
