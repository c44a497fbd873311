"""Methods text generated from the actual parameters (config), the cohort and the model cards."""

from __future__ import annotations

import pandas as pd

from brainage import __version__
from brainage.demo import bold_res
from brainage.report import preprocessing, sources
from brainage.report.extraction import atlases_text, denoising_text
from brainage.report.extraction import short_number as _num


def methods_paragraphs(
    config: dict, cohort: pd.DataFrame, cards: list[dict], n_manifest: int, fmriprep_records: list[dict] = (),
    atlases: list[dict] = (),
) -> list[tuple[str, str, list[str]]]:
    """Write the methods section from the parameters that produced the results.

    Parameters
    ----------
    config : dict
        Full resolved workflow config (checked by :func:`brainage.report.inputs.check_config`).
    cohort : DataFrame
        Analysed subjects (participant_id, site, age in years, sex, n_timepoints, n_frames_kept, mean_fd in mm).
    cards : list of dict
        Model cards (model, fold, seeds, versions, device, epochs_run, ...); read with ``.get``.
    n_manifest : int
        Subjects listed in the participants manifest.
    fmriprep_records : list of dict
        One record per fMRIPrep job run by the workflow (empty for derivative inputs).
    atlases : list of dict
        The built atlas descriptions, in config order (see :func:`features_text`); may be empty.

    Returns
    -------
    list of (str, str, list of str)
        (heading, plain-text paragraph, list items) per section; only "Models" has items, one per
        model. The caller escapes them for HTML.
    """
    models = {name: config["models"].get(name, {}) for name in config["train"]["models"]}
    n_models = len(models)
    preprocessed = preprocessing.preprocessing_text(config, list(fmriprep_records))
    return [
        ("Data", data_text(config, cohort, n_manifest), []),
        *([("Preprocessing", preprocessed, [])] if preprocessed else []),
        ("Quality control", preprocessing.qc_text(config["qc"]), []),
        ("Denoising", _indi_or(sources.denoising_text, config) or denoising_text(config["extract"]), []),
        ("Features", _indi_or(sources.features_text, config) or features_text(config, atlases), []),
        ("Validation", validation_text(config, n_heldout(config["dataset"], cohort)), []),
        ("Models", f"{n_models} model{'s were' if n_models != 1 else ' was'} evaluated:",
         models_text(models, cards)),
        ("Software", software_text(cards), []),
    ]


def _indi_or(text, config: dict) -> str | None:
    """The INDI-specific text of a section when the data were downloaded, else None."""
    return text(config) if config["inputs"]["source"] == "indi" else None


def data_text(config: dict, cohort: pd.DataFrame, n_manifest: int) -> str:
    """Describe the data source and the analysed cohort (size, sites, ages, sex, frames kept)."""
    inputs = config["inputs"]
    if inputs["source"] == "demo":
        demo = config["demo"]
        source = (
            f"The data were the embedded synthetic demo cohort of brainage: {demo['n_subjects']} subjects "
            f"generated over the sites {', '.join(map(str, demo['sites']))}, {demo['n_timepoints']} volumes per run "
            f"at a repetition time of {_num(demo['tr'])} s and {demo['voxel_size']} mm voxels, ages drawn uniformly "
            f"between {_num(demo['age_min'])} and {_num(demo['age_max'])} years, written in fMRIPrep's derivative "
            f"format (task-{inputs['task']}, space-{inputs['space']}, res-{bold_res(config)})."
        )
    elif inputs["source"] == "indi":
        source = sources.data_text(config)
    else:
        source = (
            f"The data were fMRIPrep derivatives of the {inputs['dataset']} dataset ({inputs['derivatives']}; "
            f"task-{inputs['task']}, space-{inputs['space']}, res-{bold_res(config)}), with age, sex and site "
            f"from {inputs['participants']}."
        )
    return f"{source} {_cohort_text(cohort, n_manifest)}"


def _cohort_text(cohort: pd.DataFrame, n_manifest: int) -> str:
    n = len(cohort)
    if n == 0:
        return f"Of the {n_manifest} subjects listed in the manifest, none was analysed."
    sites = sorted(cohort["site"].astype(str).unique())
    age = cohort["age"].astype(float)
    sex = cohort["sex"].fillna("n/a").astype(str).value_counts().sort_index()
    kept = cohort["n_frames_kept"] / cohort["n_timepoints"]
    fd = cohort["mean_fd"].astype(float).median()
    motion = f"; median mean framewise displacement {fd:.3f} mm" if pd.notna(fd) else ""
    return (
        f"Of the {n_manifest} subjects listed in the manifest, {n} were analysed, from {len(sites)} "
        f"site{'s' if len(sites) != 1 else ''} ({', '.join(sites)}), aged {age.min():.1f} to {age.max():.1f} "
        f"years (mean {age.mean():.1f}, SD {age.std(ddof=1) if n > 1 else 0.0:.1f}; sex "
        f"{', '.join(f'{k} {v}' for k, v in sex.items())}). A median of {100 * kept.median():.0f}% of the "
        f"frames was kept after censoring (range {100 * kept.min():.0f}-{100 * kept.max():.0f}%){motion}."
    )


def features_text(config: dict, atlases: list[dict] = ()) -> str:
    """Describe every atlas, the coverage rule and the downsampled volumes.

    Parameters
    ----------
    config : dict
        The full resolved workflow config (``atlases``, ``extract``, ``inputs``, ``demo``).
    atlases : list of dict
        The built ``atlas.json`` of each configured atlas, in config order, with ``n_regions``
        (:func:`brainage.report.inputs.read_atlas_dirs`); empty: described from the config.
    """
    if config["inputs"]["source"] == "demo":
        source_grid = f"from the {config['demo']['voxel_size']} mm BOLD grid"
    else:
        source_grid = f"from the res-{bold_res(config)} BOLD grid"
    return (
        f"{atlases_text(config['atlases'], config['extract'], atlases)} For the frame-wise 3D CNN, cleaned "
        f"volumes were block-averaged to {config['extract']['volume_voxel_size']} mm voxels {source_grid} (a "
        f"coarse voxel kept when at least half of it lies in the brain mask), "
        f"{_volume_scaling(config['extract'])} and stored as float16."
    )


def _volume_scaling(extract: dict) -> str:
    if extract["volume_scaling"] == "global":
        return ("demeaned per voxel and divided by one standard deviation per subject (keeping the spatial "
                "pattern of fluctuation amplitude)")
    return "z-scored per voxel over time"


def heldout_description(dataset: dict) -> str:
    """Name what ``dataset.test_sites`` / ``dataset.test_datasets`` hold out, e.g. "sites A, B; dataset X".

    Returns an empty string when nothing is held out.
    """
    parts = []
    for key, what in (("test_sites", "site"), ("test_datasets", "dataset")):
        names = [str(n) for n in dataset.get(key) or []]
        if names:
            parts.append(f"{what}{'s' if len(names) != 1 else ''} {', '.join(names)}")
    return "; ".join(parts)


def n_heldout(dataset: dict, cohort: pd.DataFrame) -> int:
    """Count the cohort subjects whose site or dataset is held out (as brainage.splits.held_out does)."""
    sites, datasets = cohort["site"].astype(str), cohort["dataset"].astype(str)
    held = sites.isin([str(s) for s in dataset["test_sites"]])
    held |= datasets.isin([str(d) for d in dataset["test_datasets"]])
    return int(held.sum())


def _heldout_text(config: dict, n: int) -> str:
    what = heldout_description(config["dataset"])
    if not what:
        return ""
    text = (
        f" The subjects of the {what} ({n} subjects) were held out as an external test set before the folds were "
        "made: folds, training, inner validation splits and hyper-parameter selection used only the other "
        f"subjects. Each held-out subject's predicted age is the mean of the {config['dataset']['n_folds']} "
        "fold models' predictions (an ensemble of the cross-validation models)."
    )
    if config["evaluate"]["bias_correction"]:
        text += (" Their age-bias line was fitted per model on the pooled out-of-fold predictions of the "
                 "cross-validation subjects, never on held-out subjects, and applied to the ensemble mean.")
    return text + " Metrics are reported separately for the cross-validation and the held-out test set."


def validation_text(config: dict, n_held_out: int = 0) -> str:
    """Describe the folds, the seed, the held-out test set, the age-bias correction and the metrics.

    Parameters
    ----------
    config : dict
        The full resolved workflow config.
    n_held_out : int
        Held-out cohort subjects (:func:`n_heldout`), named in the text when something is held out.
    """
    n_folds = config["dataset"]["n_folds"]
    if config["dataset"]["group_by_site"]:
        folds = (f"{n_folds}-fold cross-validation grouped by site (scikit-learn StratifiedGroupKFold: "
                 f"each site's subjects in a single test fold)")
    else:
        folds = (f"{n_folds}-fold cross-validation stratified by age (scikit-learn StratifiedKFold on age "
                 f"quantile bins, shuffled)")
    if config["evaluate"]["bias_correction"]:
        bias = (
            "The age bias (regression towards the mean age) was corrected per model and fold with a linear fit "
            "predicted = a * age + b on out-of-sample predictions of that fold's training subjects only, never on "
            "its test subjects, and corrected = (predicted - b) / a (Beheshti et al. 2019; de Lange and Cole "
            "2020); no correction was applied where |a| < 0.1, as for the dummy model."
        )
    else:
        bias = "No age-bias correction was applied: corrected predictions equal the raw ones."
    return (
        f"Every model used the same subject-level {folds}, from the single workflow seed {config['seed']}; "
        f"per-fold and per-model seeds were derived from it and recorded in each model card. "
        f"{bias}{_heldout_text(config, n_held_out)} Metrics on the pooled test predictions: mean absolute error "
        "(MAE, years), root mean squared error, Pearson r, R², MAE divided by the SD of the true ages, the same "
        "for corrected predictions, and the MAE difference to the dummy model and to the connectome ridge."
        f"{_interval_text(config)}"
    )


def _interval_text(config: dict) -> str:
    """The bootstrap behind the intervals of metrics.tsv, or nothing when there are none."""
    resamples = config["evaluate"].get("bootstrap_resamples", 0)
    if not resamples:
        return ""
    return (f" 95 % percentile bootstrap intervals ({resamples} resamples of the subjects with replacement, "
            f"drawn from the workflow seed) accompany MAE, r and R²; the same resamples serve every model, so the "
            "intervals of the MAE differences are paired.")


def models_text(models: dict, cards: list[dict]) -> list[str]:
    """Describe each configured model (one string each) with its parameters and, from its cards, its training."""
    return [
        f"{name}: {_model_description(name, params or {})}{_param_list(params or {})}"
        f"{_training_summary([c for c in cards if c.get('model') == name])}"
        for name, params in models.items()
    ]


def _model_description(name: str, p: dict) -> str:
    torch_common = (
        f" trained with AdamW (learning rate {_num(p.get('lr'))}, weight decay {_num(p.get('weight_decay'))}, "
        f"batch size {p.get('batch_size')}) on random windows of {p.get('window')} frames, for at most "
        f"{p.get('epochs')} epochs with early stopping (patience {p.get('patience')}) on an inner validation "
        f"split of the training subjects"
    )
    if name == "dummy":
        return "predicts the mean age of the training subjects (the reference every model must beat)"
    if name == "connectome_ridge":
        return (f"{p.get('kind')} functional connectivity between the regions (nilearn ConnectivityMeasure, "
                f"vectorised without the diagonal), standardised, then ridge regression with the penalty "
                f"chosen by RidgeCV among {_num_list(p.get('alphas', []))}")
    if name == "roi_gru":
        return (f"a temporal convolution over the ROI series ({p.get('conv_channels')} channels), a GRU "
                f"({p.get('hidden')} units), dropout {_num(p.get('dropout'))} and a linear head,{torch_common}")
    if name == "cnn_rnn":
        flip = ", with random left-right flips" if p.get("flip") else ""
        return (f"a 3D CNN ({len(p.get('channels', []))} blocks of {_num_list(p.get('channels', []))} channels) "
                f"encoding each frame, a {str(p.get('rnn')).upper()} ({p.get('hidden')} units) over the frames, "
                f"dropout {_num(p.get('dropout'))} and a linear head,{torch_common}{flip}")
    return "a model without a description in this report"


def _param_list(params: dict) -> str:
    if not params:
        return " (no parameters)."
    return " (parameters: " + "; ".join(f"{k}={_value(v)}" for k, v in sorted(params.items())) + ")."


def _training_summary(cards: list[dict]) -> str:
    if not cards:
        return " No model card was found."
    text = f" {len(cards)} fold{'s' if len(cards) != 1 else ''} trained"
    devices = sorted({str(c.get("device")) for c in cards if c.get("device")})
    if devices:
        text += f" on {', '.join(devices)}"
    epochs = [c.get("epochs_run") for c in cards if isinstance(c.get("epochs_run"), (int, float))]
    if epochs:
        text += f", {min(epochs)}-{max(epochs)} epochs run"
    seconds = [c.get("train_seconds") for c in cards if isinstance(c.get("train_seconds"), (int, float))]
    if seconds:
        text += f", {sum(seconds):.1f} s of training in total"
    return text + "."


def software_text(cards: list[dict]) -> str:
    """List the software versions recorded in the model cards (every distinct value per package)."""
    versions: dict[str, set[str]] = {}
    for card in cards:
        for package, version in (card.get("versions") or {}).items():
            versions.setdefault(str(package), set()).add(str(version))
    if not versions:
        return f"No model card recorded software versions; this report was made with brainage {__version__}."
    listed = ", ".join(f"{pkg} {' / '.join(sorted(v))}" for pkg, v in sorted(versions.items()))
    return f"Software versions recorded in the model cards: {listed}. This report was made with brainage {__version__}."


def _num_list(values: list) -> str:
    return ", ".join(_num(v) for v in values)


def _value(value: object) -> str:
    if isinstance(value, list):
        return "[" + _num_list(value) + "]"
    return _num(value)
