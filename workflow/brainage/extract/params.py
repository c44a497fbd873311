"""The ``extract`` config section as a frozen dataclass (keys and defaults live in the schema)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from brainage.errors import ConfigError


@dataclass(frozen=True)
class ExtractParams:
    """Denoising and feature-extraction parameters (``config["extract"]``).

    Every field is required: defaults are filled by ``config/config.schema.yaml`` at DAG build,
    so the code holds none of its own. See ``config/config.yaml`` for the meaning of each key.
    """

    strategy: tuple[str, ...]
    motion: str
    wm_csf: str
    fd_threshold: float
    std_dvars_threshold: float
    scrub_min_segment: int
    high_pass: float | None
    low_pass: float | None
    detrend: bool
    standardize: str | bool
    min_frames: int
    volume_voxel_size: int
    volume_scaling: str

    @classmethod
    def from_dict(cls, params: dict) -> ExtractParams:
        """Build from the JSON object the rule passes.

        Raises
        ------
        ConfigError
            If keys are missing or unknown (the schema fills and checks them).
        """
        names = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(names - params.keys())
        unknown = sorted(params.keys() - names)
        if missing or unknown:
            raise ConfigError(
                f"extract params: missing keys {missing}, unknown keys {unknown}; pass the "
                "schema-validated 'extract' section of the config"
            )
        return cls(**{**params, "strategy": tuple(params["strategy"])})

    def to_dict(self) -> dict:
        """Plain dict (JSON-ready) for provenance and QC records."""
        out = dataclasses.asdict(self)
        out["strategy"] = list(self.strategy)
        return out

    @property
    def nilearn_standardize(self) -> str | None:
        """``standardize`` as nilearn 0.13+ wants it: ``None`` instead of ``False``."""
        return self.standardize or None

    @property
    def filtering(self) -> bool:
        """True when a Butterworth band-pass is applied (either cut-off set)."""
        return self.high_pass is not None or self.low_pass is not None
