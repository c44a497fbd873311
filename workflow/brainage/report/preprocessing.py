"""Methods text for fMRIPrep preprocessing (from the config and each job's record) and motion QC."""

from __future__ import annotations

from collections import Counter

from brainage.download.indi import is_raw_bids
from brainage.report import sources

_ENGINE = {
    "docker": "in its Docker image {image} (through fmriprep-docker)",
    "apptainer": "in the Apptainer image {image}",
    "singularity": "in the Singularity image {image}",
    "native": "installed natively",
}


def preprocessing_text(config: dict, records: list[dict]) -> str | None:
    """What fMRIPrep did to the raw BIDS datasets, or None when none was preprocessed here.

    Parameters
    ----------
    config : dict
        The full resolved workflow config.
    records : list of dict
        One record per fMRIPrep job (``brainage.preprocess.derivatives.check_derivatives``):
        ``fmriprep_version`` is the version the job wrote into its derivatives, ``image`` the
        image it ran.
    """
    prep, inputs = config["preprocess"], config["inputs"]
    if inputs["source"] == "bids":
        names = f"{inputs['dataset']} ({inputs['bids_dir']})"
    elif inputs["source"] == "indi" and any(is_raw_bids(entry) for entry in config["datasets"]):
        names = "; ".join(sources.dataset_name(entry) for entry in config["datasets"] if is_raw_bids(entry))
    else:
        return None
    ran = Counter(r.get("fmriprep_version") or "an unrecorded version" for r in records)
    versions = ", ".join(f"{v} for {n} subject{'s' if n != 1 else ''}" for v, n in sorted(ran.items()))
    images = sorted({r.get("image") for r in records if r.get("image")}) or [prep["image"] or "as configured"]
    engine = _ENGINE[prep["engine"]].format(image=", ".join(images))
    surfaces = ("with FreeSurfer surface reconstruction" if prep["fs_reconall"]
                else "without FreeSurfer surface reconstruction (--fs-no-reconall)")
    extra = f"; further arguments: {' '.join(prep['extra_args'])}" if prep["extra_args"] else ""
    grid = f" at res-{inputs['res']}" if inputs["res"] is not None else " on the BOLD's own grid (no res-)"
    return (
        f"The raw BIDS data of {names} were preprocessed with fMRIPrep (Esteban et al. 2019), run "
        f"{engine}, one job per subject; the pinned version was {prep['version']} and the jobs recorded "
        f"{versions or 'nothing (no job ran)'}. One resting-state run per subject was preprocessed and "
        f"analysed: the first task-{inputs['task']} run in session, acquisition and run order, selected "
        f"with a BIDS filter file. Outputs were resampled to {inputs['space']}{grid}, "
        f"{surfaces}{extra}. Confounds (motion parameters, framewise displacement, DVARS, white-matter "
        f"and CSF signals, CompCor components) came from fMRIPrep's confounds table."
    )


def qc_text(qc: dict) -> str:
    """The motion exclusion criteria applied when the cohort was built."""
    rules = []
    if qc["max_mean_fd"] is not None:
        rules.append(f"mean framewise displacement (Power et al. 2012) above {qc['max_mean_fd']} mm")
    if qc["max_high_motion_fraction"] is not None:
        rules.append(f"more than {100 * qc['max_high_motion_fraction']:.0f}% of frames with FD above "
                     f"{qc['high_motion_fd']} mm")
    if qc["max_mean_std_dvars"] is not None:
        rules.append(f"mean standardised DVARS above {qc['max_mean_std_dvars']}")
    if not rules:
        return "No subject was excluded for motion (every motion threshold was disabled)."
    return (f"Subjects were excluded for {'; or '.join(rules)}, computed from the confounds table; "
            "subjects whose inputs have no confounds table (already denoised data) were not checked.")
