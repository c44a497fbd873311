"""Methods text generated from the actual parameters (config), the cohort and the model cards."""

from __future__ import annotations

import importlib.metadata

import pandas as pd

from brainage._version import source_version
from brainage.demo import bold_res
from brainage.templates import other_template
from brainage.models import is_torch, resolve
from brainage.models import stack_bases as models_stack_bases
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
    n_models = len(config["train"]["models"])
    preprocessed = preprocessing.preprocessing_text(config, list(fmriprep_records))
    return [
        ("Data", data_text(config, cohort, n_manifest), []),
        *([("Preprocessing", preprocessed, [])] if preprocessed else []),
        ("Quality control", preprocessing.qc_text(config["qc"]), []),
        ("Denoising", _indi_or(sources.denoising_text, config) or denoising_text(config["extract"]), []),
        ("Features", _indi_or(sources.features_text, config) or features_text(config, atlases), []),
        ("Validation", validation_text(config, n_heldout(config["dataset"], cohort)), []),
        ("Models", f"{n_models} model{'s were' if n_models != 1 else ' was'} evaluated:",
         models_text(config, cards)),
        ("Software", software_text(cards), []),
    ]


def resolve_model(name: str, config: dict) -> tuple[str, dict]:
    """The registered model behind a name of ``train.models`` and its full parameters.

    A variant (``variants.<name>``) is its registered ``model`` with ``models.<model>`` and the
    variant's keys laid over them (:func:`brainage.models.resolve`). A name that is neither (the
    workflow rejects those before training) is returned as itself with ``models.<name>``, and
    described as a model without a description.

    Returns
    -------
    (str, dict)
        The registered model name and a copy of its parameters.
    """
    try:
        return resolve(name, config["models"], config.get("variants") or {})
    except ValueError:
        return name, dict(config["models"].get(name) or {})


def stack_bases(params: dict, config: dict) -> list[str]:
    """The base models of a stack, as the workflow resolves them (:func:`brainage.models.stack_bases`)."""
    return models_stack_bases(params, {m: resolve_model(m, config)[0] for m in config["train"]["models"]})


def _listed(config: dict, base: str) -> list[tuple[str, dict]]:
    """(name, parameters) of every listed model whose registered model is ``base``."""
    resolved = ((name, *resolve_model(name, config)) for name in config["train"]["models"])
    return [(name, params) for name, model, params in resolved if model == base]


def _torch_models(config: dict) -> list[str]:
    names = []
    for name in config["train"]["models"]:
        base = resolve_model(name, config)[0]
        try:
            torch = is_torch(base)
        except ValueError:  # not a registered model: described as such in the model list
            torch = False
        if torch:
            names.append(name)
    return names


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
            f"format (task-{inputs['task']}, space-{inputs['space']}{_res_text(config)})."
        )
    elif inputs["source"] == "indi":
        source = sources.data_text(config)
    elif inputs["source"] == "bids":
        source = (
            f"The data were the raw BIDS dataset {inputs['dataset']} ({inputs['bids_dir']}; task-{inputs['task']}), "
            f"preprocessed here with fMRIPrep into space-{inputs['space']}{_res_text(config)}, with age, sex and site "
            f"from {inputs['participants'] or inputs['bids_dir'] + '/participants.tsv'}."
        )
    else:
        source = (
            f"The data were fMRIPrep derivatives of the {inputs['dataset']} dataset ({inputs['derivatives']}; "
            f"task-{inputs['task']}, space-{inputs['space']}{_res_text(config)}), with age, sex and site "
            f"from {inputs['participants']}."
        )
    return f"{source} {_cohort_text(cohort, n_manifest)}"


def _res_text(config: dict) -> str:
    """", res-2" for the BOLD's res entity; nothing when inputs.res is null (any single one)."""
    res = bold_res(config)
    return f", res-{res}" if res is not None else ""


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
        source_grid = f"from the res-{bold_res(config)} BOLD grid" if bold_res(config) else "from the BOLD grid"
    return (
        f"{atlases_text(config['atlases'], config['extract'], atlases)}{_template_note(config, atlases)} "
        f"For the frame-wise 3D CNN, cleaned "
        f"volumes were block-averaged to {config['extract']['volume_voxel_size']} mm voxels {source_grid} (a "
        f"coarse voxel kept when at least half of it lies in the brain mask), "
        f"{_volume_scaling(config['extract'])} and stored as float16."
    )


def _template_note(config: dict, atlases: list[dict]) -> str:
    """A warning sentence for atlases defined in another template than the BOLD's inputs.space."""
    if config["inputs"]["source"] == "indi":
        return ""  # INDI derivatives carry their own spaces (ABIDE PCP: MNI152 of FSL), not inputs.space
    space = config["inputs"]["space"]
    others = [f"atlas-{meta.get('id')} ({meta.get('space')})" for meta in atlases
              if other_template(meta.get("space"), space)]
    if not others:
        return ""
    return (f" Warning: {', '.join(others)} {'is' if len(others) == 1 else 'are'} defined in another template "
            f"than the BOLD ({space}); no transform between the templates was applied (each atlas was placed on "
            "the BOLD grid by its affine), so region boundaries may be displaced.")


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
            "The age bias (regression towards the mean age) was corrected per model and outer fold with a linear "
            "fit predicted = a * age + b on the cross-fitted predictions of all that fold's training subjects, "
            "never on its test subjects, and corrected = (predicted - b) / a (Beheshti et al. 2019; de Lange and "
            "Cole 2020); no correction was applied where |a| < 0.1, as for the dummy model."
        )
    else:
        bias = "No age-bias correction was applied: corrected predictions equal the raw ones."
    extra = " ".join(filter(None, [*_stack_sentences(config), _combat_text(config)]))
    return (
        f"Every model used the same subject-level {folds}, from the single workflow seed {config['seed']}; "
        f"per-fold and per-model seeds were derived from it and recorded in each model card. "
        f"{inner_text(config)} {bias}{' ' + extra if extra else ''}{_heldout_text(config, n_held_out)} Metrics on "
        "the pooled test predictions: mean absolute error (MAE, years), root mean squared error, Pearson r, R², "
        "MAE divided by the SD of the true ages, and the MAE difference to the dummy model and to the connectome "
        "ridge; for the corrected predictions (meant for brain-age delta analyses, not as a measure of accuracy) "
        "their MAE and r, and the Pearson r of the brain-age delta (predicted minus true age) with true age, raw "
        f"and corrected.{_interval_text(config)}"
    )


def inner_text(config: dict) -> str:
    """Describe the inner K-fold (``train.inner_folds``) that gives every training subject a cross-fitted prediction."""
    k = config["train"].get("inner_folds", 5)
    grouping = "grouped by site" if config["dataset"]["group_by_site"] else "stratified by age"
    torch = _torch_models(config)
    stopping = (f"; the torch models ({', '.join(torch)}) stopped early on 20 % of each fit's own training "
                "subjects" if torch else "")
    return (
        f"Within each outer fold, an inner {k}-fold split of the training subjects ({grouping}) gave each "
        "training subject a cross-fitted prediction: every model was fitted on all inner folds but one and "
        f"predicted the one left out{stopping}; the outer test fold was predicted by the mean of these {k} "
        "fitted models, the same models the bias line and the stack were fitted on. Every model, the dummy "
        "included, was treated alike."
    )


def _stack_sentences(config: dict) -> list[str]:
    """One sentence per listed stack (``stack`` or a variant of it): its base models and how they are weighted."""
    sentences = []
    for name, params in _listed(config, "stack"):
        chosen = ("its configured base models" if params.get("models")
                  else "every other listed model but the dummy")
        named = "The stack" if name == "stack" else f"The stack {name}"
        if params.get("method") == "select":
            sentences.append(
                f"{named} chose among {chosen} ({', '.join(stack_bases(params, config))}) the one model with the "
                "lowest mean absolute error on its cross-fitted predictions of the training subjects, within each "
                "outer fold (once per inner fit, whose test predictions are averaged), and used that model's "
                "predictions unchanged: a choice by inner cross-validation, so the test folds never steered it."
            )
            continue
        sentences.append(
            f"{named} combined {chosen} ({', '.join(stack_bases(params, config))}) as an intercept plus "
            "non-negative weights times their predicted ages (non-negative least squares with intercept, "
            "scikit-learn LinearRegression(positive=True)), fitted within each outer fold on the base models' "
            "cross-fitted predictions of that fold's training subjects and applied to their predictions of its "
            "test subjects, so the test folds never steered the weights or the choice of models (a weight of 0 "
            "drops a model)."
        )
    return sentences


def _combat_text(config: dict) -> str:
    """The ComBat sentences when a listed connectome ridge (variants included) harmonises with ComBat."""
    names = [name for name, params in _listed(config, "connectome_ridge") if params.get("harmonize") == "combat"]
    if not names:
        return ""
    try:
        version = f" {importlib.metadata.version('neuroCombat')}"
    except importlib.metadata.PackageNotFoundError:
        version = ""
    unseen = []
    if config["dataset"]["group_by_site"]:
        unseen.append("with folds grouped by site, every cross-validation test subject")
    if config["dataset"].get("test_sites"):
        unseen.append("the held-out sites' subjects")
    return (
        f"For {', '.join(names)}, site effects were removed from the connectivity features with ComBat "
        f"(neuroCombat{version}; Fortin et al. 2018, NeuroImage 167:104), learned within each fit on its training "
        "subjects' features with age as a preserved covariate; test subjects of sites seen in training were "
        "harmonised with those estimates and the age term at the training mean age (test ages were never used). "
        "Test subjects of sites absent from the training subjects (or with fewer than 2 of them) were left "
        f"unharmonised{' (' + '; '.join(unseen) + ')' if unseen else ''}: an unseen site's location and scale "
        "cannot be estimated with age as a covariate without its subjects' ages, and estimating them from its "
        "features alone would remove that site's real age difference."
    )


def _interval_text(config: dict) -> str:
    """The bootstrap behind the intervals of metrics.tsv, or nothing when there are none."""
    resamples = config["evaluate"].get("bootstrap_resamples", 0)
    if not resamples:
        return ""
    return (f" 95 % percentile bootstrap intervals ({resamples} resamples of the subjects with replacement, "
            f"drawn from the workflow seed) accompany MAE, r and R²; the same resamples serve every model, so the "
            "intervals of the MAE differences are paired.")


def models_text(config: dict, cards: list[dict]) -> list[str]:
    """Describe each model of ``train.models`` (one string each): its description, parameters and training.

    A variant is named with its registered model and the parameters that differ from
    ``models.<model>``, then described with its full parameters; a stack's parameters list its
    base models as resolved (:func:`stack_bases`).
    """
    items = []
    for name in config["train"]["models"]:
        base, params = resolve_model(name, config)
        if base == "stack":
            params = {**params, "models": stack_bases(params, config)}
        items.append(
            f"{name}: {_variant_text(name, base, params, config)}{_model_description(base, params)}"
            f"{_param_list(params)}{_training_summary([c for c in cards if c.get('model') == name])}"
        )
    return items


def _variant_text(name: str, base: str, params: dict, config: dict) -> str:
    """"a variant of <base> (<differing parameters>): " for a variant, else nothing."""
    if name == base:
        return ""
    defaults = config["models"].get(base) or {}
    differ = [f"{key}={_value(value)}" for key, value in sorted(params.items()) if defaults.get(key) != value]
    return f"a variant of {base} ({'; '.join(differ) or f'the parameters of models.{base}'}): "


def _model_description(name: str, p: dict) -> str:
    torch_common = (
        f" trained with AdamW (learning rate {_num(p.get('lr'))}, weight decay {_num(p.get('weight_decay'))}, "
        f"batch size {p.get('batch_size')}) on random windows of {p.get('window')} frames, for at most "
        f"{p.get('epochs')} epochs with early stopping (patience {p.get('patience')}) on 20 % of each fit's "
        f"training subjects"
    )
    if name == "dummy":
        return "predicts the mean age of the training subjects (the reference every model must beat)"
    if name == "connectome_ridge":
        target = ", fitted on log(age) with predictions mapped back to years" if p.get("target") == "log_age" else ""
        combat = (", with site effects removed from the features by ComBat (age preserved; see Validation)"
                  if p.get("harmonize") == "combat" else "")
        return (f"{p.get('kind')} functional connectivity between the regions (nilearn ConnectivityMeasure, "
                f"vectorised without the diagonal){combat}, standardised, then ridge regression with the penalty "
                f"chosen by RidgeCV among {_num_list(p.get('alphas', []))}{target}")
    if name == "stack" and p.get("method") == "select":
        return (f"the one of {', '.join(p.get('models', []))} with the lowest cross-fitted MAE on the training "
                "subjects (selection by inner cross-validation; see Validation)")
    if name == "stack":
        return (f"an intercept plus non-negative weights times the predicted ages of "
                f"{', '.join(p.get('models', []))} (stacking; see Validation)")
    if name == "roi_gru":
        return (f"a temporal convolution over the ROI series ({p.get('conv_channels')} channels), a GRU "
                f"({p.get('hidden')} units), dropout {_num(p.get('dropout'))} and a linear head,{torch_common}")
    if name == "roi_conn":
        return (f"a learned linear mix of the regions (the identity at the start) and a GRU ({p.get('hidden')} units) "
                f"whose projected output corrects the regional signals (zero at the start) read whole runs (up to "
                f"{p.get('window')} frames); {_reader_text(p, 'the atlas regions')}")
    if name == "cnn_conn":
        channels = p.get("channels") or []
        cnn = (f"a residual 3D CNN (3x3x3 convolutions with {_num_list(channels)} hidden channels at the volume "
               f"grid's resolution, its output zero at the start) on every frame, then " if channels else "")
        return (f"{cnn}a soft parcellation of the in-mask voxels that starts as the first atlas's region means on "
                f"the volume grid (weight decay pulls it back to the atlas) and a GRU ({p.get('hidden')} units) whose "
                f"projected output corrects the regional signals (zero at the start) read whole runs (up to "
                f"{p.get('window')} frames); {_reader_text(p, 'the atlas regions measured on the volumes')}")
    if name == "cnn_rnn":
        flip = ", with random left-right flips" if p.get("flip") else ""
        return (f"a 3D CNN ({len(p.get('channels', []))} blocks of {_num_list(p.get('channels', []))} channels) "
                f"encoding each frame, a {str(p.get('rnn')).upper()} ({p.get('hidden')} units) over the frames, "
                f"dropout {_num(p.get('dropout'))} and a linear head,{torch_common}{flip}")
    return "a model without a description in this report"


def _reader_text(p: dict, start: str) -> str:
    """The connectivity reader's pooling, head and training (roi_conn, cnn_conn)."""
    target = ", on log(age) with predictions mapped back to years" if p.get("target") == "log_age" else ""
    return (f"each run is pooled into the correlation matrix R of the corrected signals, "
            f"shrunk to (1 - s) R + s I with s = {_num(p.get('shrinkage'))} and mapped to the tangent space by the "
            f"matrix logarithm (Arsigny et al. 2007); the standardised upper triangle is read by a ridge head fitted "
            f"in closed form on the training subjects (penalty chosen by leave-one-out among "
            f"{_num_list(p.get('alphas', []))}){target}. The network starts as that ridge on {start}; "
            f"it is then trained with AdamW (learning rate {_num(p.get('lr'))}, weight decay "
            f"{_num(p.get('weight_decay'))}, batches of {p.get('batch_size')} subjects, frames left out with "
            f"probability {_num(p.get('frame_dropout'))}) on the leave-one-out error of a ridge fitted within each "
            f"batch, the head refitted before every validation, for at most {p.get('epochs')} epochs with early "
            f"stopping (patience {p.get('patience')}) on 20 % of each fit's training subjects, the start included "
            f"(epoch 0: training is kept only where it beats the ridge start on those subjects). The shrinkage, "
            f"the learning rate and the other values above are fixed by the configuration, not fitted to these "
            f"data (brainage's defaults were chosen by inner cross-validation of ABIDE I training folds; a "
            f"selecting stack over variants chooses them by inner cross-validation here)")


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
    # One value per inner fit (member) in a card; a single value in cards of earlier versions.
    runs = [c.get("epochs_run") if isinstance(c.get("epochs_run"), list) else [c.get("epochs_run")] for c in cards]
    epochs = [e for run in runs for e in run if isinstance(e, (int, float))]
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
        return f"No model card recorded software versions; this report was made with brainage {source_version()}."
    listed = ", ".join(f"{pkg} {' / '.join(sorted(v))}" for pkg, v in sorted(versions.items()))
    return f"Software versions recorded in the model cards: {listed}. This report was made with brainage {source_version()}."


def _num_list(values: list) -> str:
    return ", ".join(_num(v) for v in values)


def _value(value: object) -> str:
    if isinstance(value, list):
        return "[" + _num_list(value) + "]"
    return _num(value)
