"""The only module that knows on-disk formats: Parquet columns, dtypes, metadata keys, atomic writes.

Every file brainage writes goes through here, so the format has one owner and one
``SCHEMA_VERSION``. Parquet files carry a JSON provenance record under the metadata key
``brainage`` (package version, schema version, kind, participant, parameters, sources).
"""

from brainage.storage._atomic import atomic_path, read_json, read_tsv, require_columns, write_json, write_tsv
from brainage.storage._parquet import (
    SCHEMA_VERSION,
    TimeSeries,
    Volumes,
    read_metadata,
    read_table,
    read_timeseries,
    read_volumes,
    write_table,
    write_timeseries,
    write_volumes,
)
from brainage.storage._tables import (
    COHORT_COLUMNS,
    EXCLUSION_COLUMNS,
    INDI_MANIFEST_COLUMNS,
    MANIFEST_COLUMNS,
    exclusions_frame,
)
from brainage.storage._torchfile import read_torch

__all__ = [
    "COHORT_COLUMNS",
    "EXCLUSION_COLUMNS",
    "INDI_MANIFEST_COLUMNS",
    "MANIFEST_COLUMNS",
    "SCHEMA_VERSION",
    "TimeSeries",
    "Volumes",
    "atomic_path",
    "exclusions_frame",
    "read_json",
    "read_metadata",
    "read_table",
    "read_timeseries",
    "read_torch",
    "read_tsv",
    "require_columns",
    "read_volumes",
    "write_json",
    "write_table",
    "write_timeseries",
    "write_tsv",
    "write_volumes",
]
