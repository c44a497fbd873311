"""Methods text for extraction: the denoising preset and its regressors, censoring, cleaning, and every atlas."""

from __future__ import annotations

from brainage.extract.params import confound_arguments

# What each preset is, and whom it comes from; names as in XCP-D and Ciric et al. 2017
# (NeuroImage 154:174), the regressors themselves are derived from the load_confounds arguments.
PRESET_TEXT = {
    "simple": "nilearn's 'simple' strategy (Fox et al. 2005)",
    "24P": "the 24P model (Friston et al. 1996)",
    "27P": "the 27P model (Ciric et al. 2017)",
    "36P": "the 36P model (Satterthwaite et al. 2013)",
    "acompcor": "the aCompCor model (Behzadi et al. 2007; Muschelli et al. 2014)",
    "acompcor_gsr": "the aCompCor model with global signal regression (Behzadi et al. 2007; Muschelli et al. 2014)",
    "custom": "a custom selection",
}
# load_confounds expansions: regressors per signal, and how the motion ones are made
# (Friston et al. 1996, Magn Reson Med 35:346 for the 24-parameter model).
_PER_SIGNAL = {"basic": 1, "power2": 2, "derivatives": 2, "full": 4}
_MOTION = {
    "basic": "the 6 rigid-body parameters",
    "power2": "the 6 rigid-body parameters and their squares",
    "derivatives": "the 6 rigid-body parameters and their temporal derivatives",
    "full": "the 6 rigid-body parameters, their temporal derivatives and the squares of both (Friston et al. 1996)",
}
_SIGNAL_EXPANSION = {
    "power2": "with square",
    "derivatives": "with derivative",
    "full": "with derivative, square and squared derivative",
}
# CompCor components per mask (nilearn: n_compcor counts per mask), by load_confounds ``compcor``.
_COMPCOR = {
    "anat_combined": (1, "aCompCor components of the combined WM and CSF mask"),
    "anat_separated": (2, "WM and {n} CSF aCompCor components"),
    "temporal": (1, "tCompCor components"),
    "temporal_anat_combined": (2, "tCompCor and {n} aCompCor components (combined WM and CSF mask)"),
    "temporal_anat_separated": (3, "tCompCor, {n} WM and {n} CSF aCompCor components"),
}
STANDARDIZE_TEXT = {
    "zscore_sample": "z-scored (sample standard deviation)",
    "zscore": "z-scored (population standard deviation)",
    "psc": "converted to percent signal change",
    False: "not standardised",
}


def short_number(value: object) -> str:
    """Shortest faithful form: 0.5 stays 0.5, 2.0 becomes 2; booleans as in the YAML."""
    if isinstance(value, bool):
        return str(value).lower()
    if not isinstance(value, (int, float)):
        return str(value)
    return f"{value:g}"


def regressor_groups(args: dict) -> list[tuple[int | None, str]]:
    """Name the confound groups that ``load_confounds`` arguments regress, with their counts.

    Parameters
    ----------
    args : dict
        :func:`brainage.extract.params.confound_arguments` output (``strategy``, ``motion``,
        ``wm_csf``, ``global_signal``, ``compcor``, ``n_compcor``).

    Returns
    -------
    list of (int or None, str)
        (number of regressors, or None where it varies by run, short description) per group,
        e.g. ``(24, "24 motion")`` and ``(12, "WM, CSF and global signal each with derivative,
        square and squared derivative")`` for 36P.
    """
    strategy = args["strategy"]
    groups = []
    if "motion" in strategy:
        n = 6 * _PER_SIGNAL[args["motion"]]
        groups.append((n, f"{n} motion"))
    groups += _signal_groups(args)
    if "compcor" in strategy:
        groups.append(_compcor_group(args["compcor"], args["n_compcor"]))
    if "high_pass" in strategy:
        groups.append((None, "fMRIPrep's discrete-cosine high-pass regressors"))
    return groups


def _signal_groups(args: dict) -> list[tuple[int, str]]:
    """WM/CSF and global signal groups; one phrase when both use the same expansion."""
    chosen = [(names, args[key]) for key, names in (("wm_csf", ["WM", "CSF"]), ("global_signal", ["global signal"]))
              if key in args["strategy"]]
    if len(chosen) == 2 and chosen[0][1] == chosen[1][1]:
        chosen = [(chosen[0][0] + chosen[1][0], chosen[0][1])]
    return [_signal_group(names, expansion) for names, expansion in chosen]


def _signal_group(names: list[str], expansion: str) -> tuple[int, str]:
    listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
    count = len(names) * _PER_SIGNAL[expansion]
    if expansion == "basic":
        return count, listed if len(names) == 1 else f"{listed} means"
    return count, f"{listed} {'each ' if len(names) > 1 else ''}{_SIGNAL_EXPANSION[expansion]}"


def _compcor_group(compcor: str, n_compcor: int | str) -> tuple[int | None, str]:
    masks, words = _COMPCOR[compcor]
    if n_compcor == "all":
        # fMRIPrep's default: the components that explain 50 % of the variance in each mask.
        return None, f"the {words.replace('{n} ', '')} explaining 50% of the variance (Behzadi et al. 2007)"
    return masks * n_compcor, f"{n_compcor} {words.format(n=n_compcor)} (Behzadi et al. 2007)"


def denoising_text(extract: dict) -> str:
    """Describe the preset's regressors, censoring, the minimum clean data, filtering and standardisation.

    Parameters
    ----------
    extract : dict
        The ``extract`` config section (``denoise``, ``custom``, ``scrub``, thresholds,
        ``scrub_min_segment``, ``min_frames``, ``min_seconds`` (s), ``high_pass`` /
        ``low_pass`` (Hz), ``detrend``, ``standardize``).
    """
    args = confound_arguments(extract)
    return " ".join([_regression_text(extract, args), censoring_text(extract), _cleaning_text(extract)])


def _regression_text(extract: dict, args: dict) -> str:
    preset = extract["denoise"]
    groups = regressor_groups(args)
    chosen = (f" (strategy {', '.join(s for s in args['strategy'] if s != 'scrub') or 'none'})"
              if preset == "custom" else "")
    head = (f"Confounds were regressed with the denoising preset {preset}, {PRESET_TEXT[preset]}{chosen}, "
            f"selected from fMRIPrep's confounds table with nilearn's load_confounds")
    if not groups:
        return f"{head}: no confound was regressed."
    known = sum(n for n, _ in groups if n is not None)
    varying = [words for n, words in groups if n is None]
    shorts = " and ".join(_short(v) for v in varying)
    count = f"{known} regressor{'s' if known != 1 else ''}" if known else shorts
    count += f" plus {shorts}" if known and varying else ""
    text = f"{head}: {' + '.join(words for _, words in groups)} ({count})."
    if "motion" in args["strategy"]:
        n = 6 * _PER_SIGNAL[args["motion"]]
        text += f" The {n} motion regressors are {_MOTION[args['motion']]}."
    return text


def _short(words: str) -> str:
    return "the cosines" if words.startswith("fMRIPrep's discrete-cosine") else "the CompCor components"


def censoring_text(extract: dict) -> str:
    """Describe scrubbing (thresholds, null = not used; the minimum segment) and the minimum clean data."""
    if not extract["scrub"]:
        text = "No frames were censored for motion (extract.scrub off). "
    else:
        text = _scrub_text(extract)
    # nilearn's load_confounds always drops the volumes fMRIPrep flags as non-steady-state.
    return text + (
        f"Non-steady-state volumes flagged by fMRIPrep were removed. Runs with fewer than {extract['min_frames']} "
        f"frames (extract.min_frames) or less than {short_number(extract['min_seconds'])} s of clean data "
        f"(frames kept x repetition time; extract.min_seconds) left were excluded."
    )


def _scrub_text(extract: dict) -> str:
    fd, dvars = extract["fd_threshold"], extract["std_dvars_threshold"]
    measures = ([f"framewise displacement above {short_number(fd)} mm"] if fd is not None else []) + (
        [f"standardised DVARS above {short_number(dvars)}"] if dvars is not None else [])
    if not measures:
        return "Scrubbing was on, but both thresholds were null, so no frame was censored for motion. "
    segment = extract["scrub_min_segment"]
    text = (f"Frames with {' or '.join(measures)} were censored (scrubbing; Power et al. 2014), "
            + (f"together with kept segments shorter than {segment} frames. " if segment > 0
               else "with no minimum segment length. "))
    unused = [name for name, value in (("Framewise displacement", fd), ("DVARS", dvars)) if value is None]
    if unused:
        text += f"{unused[0]} was not used for censoring (threshold null). "
    return text


def filter_text(high_pass: float | None, low_pass: float | None) -> str:
    """The Butterworth filter in words, e.g. "band-pass filtering between 0.01 and 0.1 Hz"."""
    if high_pass is not None and low_pass is not None:
        return f"band-pass filtering between {short_number(high_pass)} and {short_number(low_pass)} Hz"
    if high_pass is not None:
        return f"high-pass filtering at {short_number(high_pass)} Hz"
    if low_pass is not None:
        return f"low-pass filtering at {short_number(low_pass)} Hz"
    return "no temporal filtering"


def _cleaning_text(extract: dict) -> str:
    steps = ["linear detrending" if extract["detrend"] else "no detrending",
             filter_text(extract["high_pass"], extract["low_pass"]), "confound regression and censoring"]
    text = (f"Each run was cleaned as nilearn.signal.clean does ({', '.join(steps)}), in one linear step applied "
            "to the region signals and the coarse volumes of a single pass over the BOLD (every step is linear, "
            "so this equals cleaning each voxel first). ")
    if extract["high_pass"] is not None or extract["low_pass"] is not None:
        # Lindquist et al. 2019 (Hum Brain Mapp 40:2358): interpolate removed frames, filter, then censor.
        text += ("The filter was a Butterworth filter; frames removed by censoring were interpolated (cubic spline) "
                 "before it and dropped after it. ")
    return text + f"Region series were {STANDARDIZE_TEXT.get(extract['standardize'], extract['standardize'])}."



# Display names of the registry's atlases (brainage.download.atlas); unknown names are shown as given.
_ATLAS_NAMES = {
    "schaefer": "Schaefer 2018", "harvard_oxford": "Harvard-Oxford", "msdl": "MSDL", "basc": "BASC multiscale",
    "pcp": "ABIDE PCP", "power": "Power 2011", "dosenbach": "Dosenbach 2010",
}
# Only used without the built atlas.json: the kind each registry name builds.
_KIND_OF = {"msdl": "maps", "power": "spheres", "dosenbach": "spheres"}
_UNITS = {"labels": "regions", "maps": "probabilistic maps", "spheres": "spheres"}
# Keys of a spec that are not atlas parameters (the file names are named in the text itself).
_NOT_PARAMETERS = ("name", "id", "path", "labels")


def atlas_description(spec: dict, meta: dict | None = None) -> str:
    """Name one atlas: what it is, how many regions, and where it comes from.

    Parameters
    ----------
    spec : dict
        The atlas's entry of ``config["atlases"]`` (``name`` and its parameters).
    meta : dict, optional
        Its built ``atlas.json`` (``id``, ``kind``, ``space``, ``source``, ``citation``,
        ``radius_mm``, ``spec``) with ``n_regions`` (rows of its ``labels.tsv``) added; None:
        described from ``spec`` alone.
    """
    meta = meta or {}
    spec = meta.get("spec") or spec
    n = meta.get("n_regions", spec.get("n_regions"))
    if spec["name"] == "kmeans":
        return (f"a {n}-region atlas made by k-means clustering of the voxel coordinates of nilearn's MNI152 "
                f"brain mask (spatially compact parcels, seeded with the workflow seed)")
    if spec["name"] == "file":
        regions = f"{n} regions, " if n is not None else ""
        return f"the label image {spec.get('path')} ({regions}each non-zero integer label one region)"
    details = [", ".join(f"{k}={short_number(v)}" for k, v in sorted(spec.items()) if k not in _NOT_PARAMETERS)]
    kind = meta.get("kind", _KIND_OF.get(spec["name"], "labels"))
    if n is not None:
        details.append(f"{n} {_UNITS[kind]}")
    if meta.get("citation"):
        details.append(meta["citation"])
    if meta.get("space") or meta.get("source"):
        details.append(f"{meta.get('space') or 'space not recorded'}, "
                       f"from {meta.get('source') or 'an unrecorded source'}")
    details = [d for d in details if d]
    return f"the {_ATLAS_NAMES.get(spec['name'], spec['name'])} atlas" + (f" ({'; '.join(details)})" if details else "")


def _signal_phrase(spec: dict, meta: dict | None) -> str:
    """How one atlas's regional signals are computed (what the matching nilearn masker computes)."""
    meta = meta or {}
    kind = meta.get("kind", _KIND_OF.get(spec["name"], "labels"))
    if kind == "maps":
        return ("the least-squares fit of the maps (resampled to the BOLD grid with continuous interpolation, "
                "within the brain mask) to each frame, as nilearn's NiftiMapsMasker")
    if kind == "spheres":
        radius = meta.get("radius_mm", (meta.get("spec") or spec).get("radius_mm"))
        within = f"within {short_number(radius)} mm of" if radius is not None else "in a sphere around"
        shared = " (overlapping spheres share their common voxels)" if meta.get("allow_overlap") else ""
        return (f"the mean cleaned signal of the in-mask voxels {within} each coordinate{shared}, as nilearn's "
                "NiftiSpheresMasker")
    return ("the mean cleaned signal of each region's in-mask voxels, the labels resampled to the BOLD grid "
            "with nearest-neighbour interpolation")


def atlases_text(atlases: list[dict], extract: dict, metas: list[dict] = ()) -> str:
    """Describe every atlas of the run, which one feeds the ROI models, and the coverage rule.

    Parameters
    ----------
    atlases : list of dict
        ``config["atlases"]``, in order (the first feeds the ROI models).
    extract : dict
        The ``extract`` section (``min_region_coverage``, a share 0-1; ``on_region_loss``).
    metas : list of dict
        The built ``atlas.json`` of each, in the same order (see :func:`atlas_description`),
        or empty to describe the atlases from the config alone.
    """
    metas = list(metas) or [None] * len(atlases)
    parts = []
    for spec, meta in zip(atlases, metas, strict=True):
        atlas_id = (meta or {}).get("id") or spec.get("id")
        tag = f" (atlas-{atlas_id})" if atlas_id else ""
        parts.append(f"{atlas_description(spec, meta)}{tag}: {_signal_phrase(spec, meta)}")
    if len(parts) == 1:
        text = f"ROI series were computed for one atlas, {parts[0]}; it fed the ROI models."
    else:
        listed = "; ".join(f"({i}) {part}" for i, part in enumerate(parts, start=1))
        text = (f"ROI series were computed for {len(parts)} atlases from the same cleaned data, one file per "
                f"atlas: {listed}. The first atlas fed the ROI models.")
    return f"{text} {coverage_text(extract)}"


def coverage_text(extract: dict) -> str:
    """The rule for regions lost on a run's brain mask (extract.min_region_coverage, extract.on_region_loss)."""
    share = 100 * extract["min_region_coverage"]
    text = (f"A region was lost on a run when less than {short_number(share)}% of its volume lay inside the "
            f"brain mask on the BOLD grid, or when it vanished on resampling (extract.min_region_coverage "
            f"{short_number(extract['min_region_coverage'])}); ")
    if extract["on_region_loss"] == "exclude":
        text += ("a run with a lost region in any atlas was excluded, naming the regions "
                 "(extract.on_region_loss exclude).")
    else:
        text += ("such runs were kept with a warning (extract.on_region_loss warn); a region without any voxel "
                 "is then an all-zero column.")
    return text + " Each region's coverage is stored with its series."
