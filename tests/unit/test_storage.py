"""brainage.storage: round trips, metadata, atomic writes and format errors."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from brainage import storage
from brainage._version import source_version
from brainage.errors import InputDataError


def test_timeseries_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.standard_normal((37, 5)).astype(np.float32)
    labels = [f"roi_{i:03d}" for i in range(1, 6)]
    path = tmp_path / "s.parquet"
    storage.write_timeseries(path, data, labels, participant_id="sub-01", provenance={"params": {"a": 1}})
    ts = storage.read_timeseries(path)
    assert ts.participant_id == "sub-01"
    assert ts.labels == labels
    assert ts.data.dtype == np.float32
    np.testing.assert_array_equal(ts.data, data)
    assert ts.metadata["params"] == {"a": 1}
    assert ts.metadata["schema_version"] == storage.SCHEMA_VERSION
    assert ts.metadata["package_version"] == source_version()  # commit-exact in a checkout
    # ROI series are float32 on disk, one column per region.
    schema = pq.read_schema(path)
    assert schema.field("roi_003").type == pa.float32()


def test_volumes_round_trip_float16_with_mask_stored_once(tmp_path):
    rng = np.random.default_rng(1)
    mask = np.zeros((6, 7, 5), dtype=bool)
    mask[1:5, 2:6, 1:4] = True
    frames = rng.standard_normal((11, 6, 7, 5)).astype(np.float32)
    affine = np.diag([8.0, 8.0, 8.0, 1.0])
    path = tmp_path / "v.parquet"
    storage.write_volumes(path, frames, mask, affine, participant_id="sub-02")
    vol = storage.read_volumes(path)
    assert vol.data.dtype == np.float16
    assert vol.data.shape == (11, int(mask.sum()))
    np.testing.assert_array_equal(vol.mask, mask)
    np.testing.assert_array_equal(vol.affine, affine)
    np.testing.assert_array_equal(vol.data, frames[:, mask].astype(np.float16))
    grid = vol.to_grid()
    assert grid.shape == frames.shape
    assert np.all(grid[:, ~mask] == 0)
    # Only in-mask voxels are stored, byte-stream split (no dictionary) and compressed with zstd.
    meta = pq.ParquetFile(path).metadata
    assert meta.row_group(0).column(1).compression == "ZSTD"
    assert "BYTE_STREAM_SPLIT" in meta.row_group(0).column(1).encodings
    assert "RLE_DICTIONARY" in meta.row_group(0).column(0).encodings  # the frame index keeps its dictionary


def test_empty_outputs_for_excluded_subjects_read_back(tmp_path):
    storage.write_timeseries(tmp_path / "s.parquet", np.zeros((0, 3)), ["a", "b", "c"], participant_id="x")
    assert storage.read_timeseries(tmp_path / "s.parquet").data.shape == (0, 3)
    storage.write_volumes(tmp_path / "v.parquet", np.zeros((0, 1)), np.ones((1, 1, 1), bool), np.eye(4), participant_id="x")
    assert storage.read_volumes(tmp_path / "v.parquet").data.shape == (0, 1)


def test_table_round_trip_and_kind_check(tmp_path):
    df = pd.DataFrame({"participant_id": ["sub-1", "sub-2"], "age": [10.5, 70.25]})
    storage.write_table(tmp_path / "t.parquet", df, kind="cohort", provenance={"seed": 3})
    back = storage.read_table(tmp_path / "t.parquet", kind="cohort")
    pd.testing.assert_frame_equal(back, df)
    assert back.attrs["brainage"]["seed"] == 3
    with pytest.raises(ValueError, match="holds 'cohort', expected 'predictions'"):
        storage.read_table(tmp_path / "t.parquet", kind="predictions")


def test_foreign_and_old_files_are_rejected(tmp_path):
    pq.write_table(pa.table({"x": [1]}), tmp_path / "foreign.parquet")
    with pytest.raises(ValueError, match="foreign.parquet: not a brainage Parquet file"):
        storage.read_metadata(tmp_path / "foreign.parquet")
    table = pa.table({"x": [1]}).replace_schema_metadata(
        {b"brainage": json.dumps({"schema_version": "0", "kind": "cohort"}).encode()}
    )
    pq.write_table(table, tmp_path / "old.parquet")
    with pytest.raises(ValueError, match="schema version '0'.*rerun the stage"):
        storage.read_metadata(tmp_path / "old.parquet")


def test_shape_errors_name_the_mismatch(tmp_path):
    with pytest.raises(ValueError, match="does not match 3 labels"):
        storage.write_timeseries(tmp_path / "s.parquet", np.zeros((4, 2)), ["a", "b", "c"], participant_id="x")
    with pytest.raises(ValueError, match="does not match mask"):
        storage.write_volumes(tmp_path / "v.parquet", np.zeros((2, 3, 3, 3)), np.ones((2, 2, 2), bool), np.eye(4), participant_id="x")
    assert not list(tmp_path.iterdir())


def test_atomic_write_leaves_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "out.json"
    storage.write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with storage.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert storage.read_json(target) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_atomic_temp_name_keeps_the_suffix(tmp_path):
    with storage.atomic_path(tmp_path / "img.nii.gz") as tmp:
        assert tmp.name.endswith("img.nii.gz")
        assert tmp.parent == tmp_path
        tmp.write_bytes(b"x")
    assert (tmp_path / "img.nii.gz").read_bytes() == b"x"


def test_tsv_uses_bids_missing_values(tmp_path):
    storage.write_tsv(tmp_path / "t.tsv", pd.DataFrame({"a": [1.0, None]}))
    assert (tmp_path / "t.tsv").read_text() == "a\n1.0\nn/a\n"


def test_atomic_output_gets_umask_permissions(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        storage.write_json(tmp_path / "r.json", {})
    finally:
        os.umask(old)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644


def test_require_columns_names_file_and_missing_columns(tmp_path):
    df = pd.DataFrame({"participant_id": ["sub-1"], "age": [3.0]})
    storage.require_columns(df, tmp_path / "m.tsv", ("participant_id", "age"), "manifest")
    with pytest.raises(InputDataError, match=r"m\.tsv: manifest lacks columns \['site'\] \(expected "
                       r"\['participant_id', 'site'\], found \['participant_id', 'age'\]\)"):
        storage.require_columns(df, tmp_path / "m.tsv", ("participant_id", "site"), "manifest")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", r"bad.tsv: empty file, expected a header row"),
        (b"a\tb\n1\t2\n3\t4\t5\n", r"bad.tsv: not a readable tab-separated table \(.*Expected 2 fields in line 3, saw 3"),
        (b"a\tb\n\xff\xfe\t1\n", r"bad.tsv: not a readable tab-separated table \(.*codec can't decode"),
    ],
)
def test_read_tsv_errors_name_the_file(tmp_path, content, match):
    (tmp_path / "bad.tsv").write_bytes(content)
    with pytest.raises(InputDataError, match=match):
        storage.read_tsv(tmp_path / "bad.tsv")


# --- unreadable results files: one InputDataError that starts with the path -------------------


def _write_kind(path, kind):
    if kind == "timeseries":
        storage.write_timeseries(path, np.ones((6, 3)), ["a", "b", "c"], participant_id="sub-01")
    elif kind == "volumes":
        mask = np.zeros((4, 4, 4), dtype=bool)
        mask[1:3, 1:3, 1:3] = True
        storage.write_volumes(path, np.ones((6, 4, 4, 4)), mask, np.eye(4), participant_id="sub-01")
    else:
        storage.write_table(path, pd.DataFrame({"participant_id": ["sub-01"], "age": [30.0]}), kind="cohort")


_READERS = {
    "timeseries": [storage.read_metadata, storage.read_timeseries],
    "volumes": [storage.read_metadata, storage.read_volumes],
    "table": [storage.read_metadata, lambda p: storage.read_table(p, kind="cohort")],
}


def _damage(path, how):
    data = path.read_bytes()
    if how == "zero-byte":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        path.write_bytes(b"\x00\xffnot parquet" * 50)
    elif how == "corrupt pages":  # the footer is intact, the data pages are not
        path.write_bytes(data[:4] + b"\x00" * 200 + data[204:])
    else:
        path.unlink()


_DAMAGE_MESSAGES = {
    "zero-byte": r"not a readable Parquet file \(truncated or corrupt: Parquet file size is 0 bytes\)",
    "truncated": r"not a readable Parquet file \(truncated or corrupt: Parquet magic bytes not found",
    "garbage": r"not a readable Parquet file \(truncated or corrupt: Parquet magic bytes not found",
    "corrupt pages": r"not a readable Parquet file \(truncated or corrupt: .*\)",
    "missing": r"file not found \(rerun snakemake to rebuild it\)",
}


@pytest.mark.parametrize("how", list(_DAMAGE_MESSAGES))
@pytest.mark.parametrize("kind", list(_READERS))
def test_unreadable_parquet_is_one_error_naming_the_file(tmp_path, kind, how):
    path = tmp_path / "sub-01" / f"sub-01_{kind}.parquet"
    _write_kind(path, kind)
    _damage(path, how)
    readers = _READERS[kind][1:] if how == "corrupt pages" else _READERS[kind]  # pages: footer reads fine
    for reader in readers:
        with pytest.raises(InputDataError, match="^" + re.escape(str(path)) + ": " + _DAMAGE_MESSAGES[how]) as info:
            reader(path)
        if how != "missing":
            assert str(info.value).endswith("; delete it and rerun snakemake to rebuild it")
            assert "\n" not in str(info.value)


def test_malformed_brainage_metadata_is_named(tmp_path):
    path = tmp_path / "v.parquet"
    _write_kind(path, "volumes")
    table = pq.read_table(path)
    record = json.loads(table.schema.metadata[b"brainage"])
    record["mask_bits"] = "not base64!"
    pq.write_table(table.replace_schema_metadata({b"brainage": json.dumps(record).encode()}), path)
    with pytest.raises(InputDataError, match=re.escape(str(path)) + r": malformed volumes metadata \(mask, affine\)"):
        storage.read_volumes(path)
    pq.write_table(table.replace_schema_metadata({b"brainage": b"{not json"}), path)
    with pytest.raises(InputDataError, match=re.escape(str(path)) + r": malformed 'brainage' metadata \(JSONDecodeError"):
        storage.read_metadata(path)
    pq.write_table(table.replace_schema_metadata({b"brainage": b"[1, 2]"}), path)
    with pytest.raises(InputDataError, match=re.escape(str(path)) + r": 'brainage' metadata is not a JSON object"):
        storage.read_metadata(path)


def test_wrong_kind_is_an_input_data_error(tmp_path):
    _write_kind(tmp_path / "t.parquet", "timeseries")
    with pytest.raises(InputDataError, match=r"t\.parquet: holds 'timeseries', expected 'volumes'"):
        storage.read_volumes(tmp_path / "t.parquet")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", r"qc.json: empty file, expected JSON; if the workflow wrote it, delete it and rerun snakemake"),
        (b'{"status": "incl', r"qc.json: not valid JSON \(truncated or corrupt: Unterminated string .*line 1 column 12"),
        (b"\x89PNG\r\n\x1a\n\xff\xfe", r"qc.json: not a readable JSON file \(.*codec can't decode"),
        (b"{]", r"qc.json: not valid JSON \(truncated or corrupt: .*line 1 column 2"),
        (None, r"qc.json: file not found$"),
    ],
)
def test_read_json_errors_name_the_file(tmp_path, content, match):
    path = tmp_path / "qc.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputDataError, match="^" + re.escape(str(tmp_path)) + "/" + match):
        storage.read_json(path)


def test_read_tsv_of_a_missing_file_or_a_folder_names_it(tmp_path):
    with pytest.raises(InputDataError, match=r"gone\.tsv: file not found"):
        storage.read_tsv(tmp_path / "gone.tsv")
    (tmp_path / "dir.tsv").mkdir()
    with pytest.raises(InputDataError, match=r"dir\.tsv: file not found"):
        storage.read_tsv(tmp_path / "dir.tsv")


# --- table columns ----------------------------------------------------------------------------


def test_exclusions_frame_has_the_exclusion_columns_empty_or_filled():
    assert storage.EXCLUSION_COLUMNS == ("participant_id", "stage", "reason")
    empty = storage.exclusions_frame()
    assert empty.empty and list(empty.columns) == ["participant_id", "stage", "reason"]
    rows = storage.exclusions_frame(iter([("sub-01", "qc", "mean FD 0.9 mm > 0.55 mm")]))
    assert rows.to_dict("records") == [{"participant_id": "sub-01", "stage": "qc", "reason": "mean FD 0.9 mm > 0.55 mm"}]
    assert storage.MANIFEST_COLUMNS == ("participant_id", "dataset", "site", "age", "sex")
    assert storage.INDI_MANIFEST_COLUMNS[:5] == storage.MANIFEST_COLUMNS
    assert storage.COHORT_COLUMNS[:5] == storage.MANIFEST_COLUMNS


def test_table_columns_are_written_once_in_the_package():
    # brainage.storage owns the on-disk formats: no other module spells these column lists out.
    package = Path(storage.__file__).resolve().parents[1]
    literals = ['"participant_id", "stage", "reason"', '"participant_id", "dataset", "site", "age", "sex"']
    copies = [f"{path.relative_to(package)}: {text}" for path in sorted(package.rglob("*.py"))
              if path.name != "_tables.py" for text in literals if text in path.read_text()]
    assert copies == []
