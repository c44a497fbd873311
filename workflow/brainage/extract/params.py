"""The ``extract`` config section as a frozen dataclass, and the denoising presets it names."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from brainage.errors import ConfigError

#: Denoising presets: which fMRIPrep confounds are regressed (nilearn ``load_confounds``
#: arguments). Names follow XCP-D and the benchmark of Ciric et al. 2017 (NeuroImage 154:174),
#: which also gives each model's regressors; "simple" is nilearn's preset of that name (Fox et
#: al. 2005, PNAS 102:9673). Censoring ("scrub") is separate: ``extract.scrub`` adds it to any.
PRESETS: dict[str, dict] = {
    # 6 motion parameters + derivatives + squares (Friston et al. 1996) + WM and CSF means +
    # fMRIPrep's DCT high-pass regressors.
    "simple": {"strategy": ["motion", "wm_csf", "high_pass"], "motion": "full", "wm_csf": "basic"},
    # Friston 24: motion only.
    "24P": {"strategy": ["motion"], "motion": "full"},
    # 24P + the WM, CSF and global signal means (27 regressors; XCP-D's 27P).
    "27P": {"strategy": ["motion", "wm_csf", "global_signal"], "motion": "full", "wm_csf": "basic",
            "global_signal": "basic"},
    # 24P + WM, CSF and global signal with derivatives and squares (Satterthwaite et al. 2013,
    # NeuroImage 64:240).
    "36P": {"strategy": ["motion", "wm_csf", "global_signal"], "motion": "full", "wm_csf": "full",
            "global_signal": "full"},
    # 6 motion + derivatives, 5 aCompCor components from the WM mask and 5 from the CSF mask
    # (Behzadi et al. 2007, NeuroImage 37:90; Muschelli et al. 2014). fMRIPrep's CompCor is fitted
    # after its DCT high-pass, so those cosine regressors go with it (nilearn requires them).
    "acompcor": {"strategy": ["motion", "compcor", "high_pass"], "motion": "derivatives",
                 "compcor": "anat_separated", "n_compcor": 5},
    # The same + the global signal and its derivative.
    "acompcor_gsr": {"strategy": ["motion", "compcor", "high_pass", "global_signal"],
                     "motion": "derivatives", "compcor": "anat_separated", "n_compcor": 5,
                     "global_signal": "derivatives"},
}
#: nilearn's defaults for the keys a preset does not set (they are then unused).
_NILEARN_DEFAULTS = {"motion": "full", "wm_csf": "basic", "global_signal": "basic",
                     "compcor": "anat_combined", "n_compcor": "all"}


@dataclass(frozen=True)
class ExtractParams:
    """Denoising and feature-extraction parameters (``config["extract"]``).

    Every field is required: defaults are filled by ``config/config.schema.yaml`` at DAG build,
    so the code holds none of its own. See ``config/config.yaml`` for the meaning of each key.
    """

    denoise: str
    custom: dict
    scrub: bool
    fd_threshold: float | None
    std_dvars_threshold: float | None
    scrub_min_segment: int
    high_pass: float | None
    low_pass: float | None
    detrend: bool
    standardize: str | bool
    min_frames: int
    min_seconds: float
    min_region_coverage: float
    on_region_loss: str
    volume_voxel_size: int
    volume_scaling: str

    @classmethod
    def from_dict(cls, params: dict) -> ExtractParams:
        """Build from the JSON object the rule passes.

        Raises
        ------
        ConfigError
            If keys are missing or unknown (the schema fills and checks them), or the preset
            is not one of :data:`PRESETS` or ``"custom"``.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(names - params.keys())
        unknown = sorted(params.keys() - names)
        if missing or unknown:
            raise ConfigError(
                f"extract params: missing keys {missing}, unknown keys {unknown}; pass the "
                "schema-validated 'extract' section of the config"
            )
        out = cls(**params)
        out.confounds  # noqa: B018 -- validates the preset name now, not at the first subject
        return out

    def to_dict(self) -> dict:
        """Plain dict (JSON-ready) for provenance and QC records."""
        return dataclasses.asdict(self)

    @property
    def confounds(self) -> dict:
        """The nilearn ``load_confounds`` arguments of the preset, scrubbing included.

        Returns
        -------
        dict
            ``strategy`` (list; with ``"scrub"`` when ``scrub`` is on), ``motion``, ``wm_csf``,
            ``global_signal``, ``compcor``, ``n_compcor``, ``scrub`` (minimum segment),
            ``fd_threshold``, ``std_dvars_threshold`` (a null threshold censors nothing on
            that measure: passed as infinity).
        """
        return confound_arguments(dataclasses.asdict(self))

    @property
    def nilearn_standardize(self) -> str | None:
        """``standardize`` as nilearn 0.13+ wants it: ``None`` instead of ``False``."""
        return self.standardize or None

    @property
    def filtering(self) -> bool:
        """True when a Butterworth band-pass is applied (either cut-off set)."""
        return self.high_pass is not None or self.low_pass is not None


def confound_arguments(extract: dict) -> dict:
    """nilearn ``load_confounds`` arguments for an ``extract`` config section (see ``ExtractParams.confounds``).

    Raises
    ------
    ConfigError
        If ``denoise`` is neither a preset nor ``"custom"``.
    """
    name = extract["denoise"]
    if name == "custom":
        chosen = dict(extract["custom"])
    elif name in PRESETS:
        chosen = PRESETS[name]
    else:
        raise ConfigError(f"extract.denoise must be one of {', '.join([*PRESETS, 'custom'])}; found {name!r}")
    args = _NILEARN_DEFAULTS | {k: v for k, v in chosen.items() if k != "strategy"}
    strategy = [s for s in chosen.get("strategy", []) if s != "scrub"]
    if extract["scrub"]:
        strategy.append("scrub")
    inf = float("inf")
    fd, dvars = extract["fd_threshold"], extract["std_dvars_threshold"]
    return args | {
        "strategy": strategy,
        "scrub": extract["scrub_min_segment"],
        "fd_threshold": inf if fd is None else fd,
        "std_dvars_threshold": inf if dvars is None else dvars,
    }
