"""Methods text for downloaded INDI datasets: what was fetched, and what its providers had already done."""

from __future__ import annotations

from brainage.download.indi import is_pcp_series

# Citations the users of each dataset are asked to give.
_DATASETS = {
    "abide_pcp": "ABIDE I (Di Martino et al. 2014), as preprocessed by the Preprocessed Connectomes Project "
                 "(Craddock et al. 2013)",
    "adhd200": "ADHD-200 (ADHD-200 Consortium 2012)",
    "nki_rs": "the NKI-Rockland Sample (Nooner et al. 2012)",
    "corr": "CoRR (Zuo et al. 2014)",
}
# PCP strategies: band-pass 0.01-0.1 Hz ("filt") and global signal regression ("global"), after the
# pipeline's own nuisance regression (PCP documentation, preprocessed-connectomes-project.org/abide).
_STRATEGY = {
    "filt_global": "band-pass filtering (0.01-0.1 Hz) and global signal regression",
    "filt_noglobal": "band-pass filtering (0.01-0.1 Hz), no global signal regression",
    "nofilt_global": "global signal regression, no band-pass filtering",
    "nofilt_noglobal": "neither band-pass filtering nor global signal regression",
}


def dataset_name(entry: dict) -> str:
    """A dataset's name as its providers ask it to be cited, e.g. "ADHD-200 (ADHD-200 Consortium 2012)"."""
    return _DATASETS[entry["name"]]


def _entry_text(entry: dict) -> str:
    text = dataset_name(entry)
    if entry["name"] == "abide_pcp":
        text += (f", pipeline {entry['pipeline']} with strategy {entry['strategy']} "
                 f"({_STRATEGY[entry['strategy']]}), derivative {entry['derivative']}")
    filters = [f"sites {', '.join(entry['sites'])}" if entry["sites"] else "",
               f"ages {entry['age_min'] if entry['age_min'] is not None else 'any'}-"
               f"{entry['age_max'] if entry['age_max'] is not None else 'any'} years"
               if entry["age_min"] is not None or entry["age_max"] is not None else "",
               "subjects passing every PCP functional QC rating" if entry.get("qc_pass") else "",
               f"a seeded random sample of {entry['max_subjects']} subjects" if entry["max_subjects"] else ""]
    chosen = [f for f in filters if f]
    return text + (f" (selected: {'; '.join(chosen)})" if chosen else "")


def data_text(config: dict) -> str:
    """The downloaded datasets, where from, and how subjects were selected."""
    indi = config["indi"]
    entries = "; ".join(_entry_text(entry) for entry in config["datasets"])
    return (
        f"The data were downloaded from the INDI archive (bucket {indi['bucket']} at {indi['endpoint_url']}; "
        f"each file's size and MD5 checked against the archive's listing): {entries}. Age, sex, site and "
        f"diagnosis came from each dataset's phenotype files."
    )


def _only_series(config: dict) -> dict | None:
    """The first dataset entry when every dataset is PCP ROI series (nothing extracted), else None."""
    entries = config["datasets"]
    return entries[0] if all(is_pcp_series(entry) for entry in entries) else None


def denoising_text(config: dict) -> str | None:
    """For ROI series used as distributed: what the provider did (brainage cleaned nothing), else None."""
    entry = _only_series(config)
    if entry is None:
        return None
    return (
        f"The ROI series were used as the PCP distributes them: preprocessed by {entry['pipeline']} "
        f"(motion correction, nuisance regression, {_STRATEGY[entry['strategy']]}) and averaged within the "
        f"regions of the {entry['derivative'].removeprefix('rois_')} atlas. brainage did no further denoising "
        f"or censoring; subjects with fewer than {config['extract']['min_frames']} frames were excluded."
    )


def features_text(config: dict) -> str | None:
    """For ROI series used as distributed: the atlas they come from, else None."""
    entry = _only_series(config)
    if entry is None:
        return None
    return (
        f"The features were the regions' mean time series of the PCP {entry['derivative']} files; "
        f"no downsampled volumes were made (the volume model needs the func_preproc derivative)."
    )
