"""Atlas registry: specs checked cheaply at DAG build, each atlas built into one standard folder."""

from brainage.download.atlas.registry import ATLAS_NAMES, atlas_id, validate_spec

__all__ = ["ATLAS_NAMES", "atlas_id", "build_atlas", "validate_spec"]


def __getattr__(name: str):
    # build_atlas pulls in nibabel, pandas and requests; common.smk imports this package at every
    # DAG build for validate_spec only, so the builders load on first use.
    if name == "build_atlas":
        from brainage.download.atlas.build import build_atlas

        return build_atlas
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
