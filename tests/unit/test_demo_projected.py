"""Tests for brainage.demo.projected and bench/abide_volumes.py: ROI series projected onto labels, block-averaged."""

import importlib.util
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from nibabel.affines import apply_affine
from scipy import sparse

from brainage import storage
from brainage.demo.projected import (
    constant_regions,
    load_labels,
    project_series,
    projected_frames,
    projection_operator,
)
from brainage.errors import ConfigError, InputDataError

REPO = Path(__file__).resolve().parents[2]
ABIDE = "abide1_pcp_cpac_filtglobal_cc200"
AFFINE_3MM = np.array([[-3.0, 0, 0, 93], [0, 3, 0, -129], [0, 0, 3, -72], [0, 0, 0, 1]])


def _bench_script():
    spec = importlib.util.spec_from_file_location("abide_volumes", REPO / "bench" / "abide_volumes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return _bench_script()


@pytest.fixture
def abide(shared_data):
    return shared_data / ABIDE


@pytest.fixture
def tiny_labels():
    """A 3 mm label image (9 x 8 x 7) with 4 regions in random blobs and unlabelled voxels."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 5, size=(9, 8, 7)).astype(np.int16)
    labels[:3] = 0  # an unlabelled slab: coarse voxels there stay outside the mask
    return nib.Nifti1Image(labels, AFFINE_3MM)


def _explicit(labels: np.ndarray, affine: np.ndarray, series: np.ndarray, coarse_aff: np.ndarray, shape):
    """The route W replaces: paint the 3 mm frames, then average labelled voxels per coarse voxel.

    Each fine voxel goes to the coarse voxel nearest its centre in world space, found through the
    coarse affine (independent of the block operator's index arithmetic). A coarse voxel is in
    the mask when at least half of the fine voxels it holds are labelled (whole ratios: half of
    the full cube, the padding past the grid edge counting as unlabelled).
    """
    fine = np.zeros((series.shape[0], *labels.shape))
    for r in range(1, series.shape[1] + 1):
        fine[:, labels == r] = series[:, [r - 1]]
    ijk = np.argwhere(np.ones(labels.shape, bool))
    coarse = np.rint(apply_affine(np.linalg.inv(coarse_aff), apply_affine(affine, ijk))).astype(int)
    total = np.zeros((series.shape[0], *shape))
    count, size = np.zeros(shape), np.zeros(shape)
    for (i, j, k), (a, b, c) in zip(ijk, coarse, strict=True):
        size[a, b, c] += 1
        if labels[i, j, k] > 0:
            total[:, a, b, c] += fine[:, i, j, k]
            count[a, b, c] += 1
    ratio = abs(coarse_aff[0, 0] / affine[0, 0])
    if abs(ratio - round(ratio)) < 1e-9:
        size[:] = round(ratio) ** 3
    mask = (count > 0) & (count >= 0.5 * size)
    return total[:, mask] / count[mask], mask


@pytest.mark.parametrize("voxel_size", [4.0, 6.0, 8.0])
def test_operator_equals_explicit_route(tiny_labels, voxel_size):
    series = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    weights, mask, affine = projection_operator(tiny_labels, voxel_size)
    expected, expected_mask = _explicit(np.asarray(tiny_labels.dataobj), AFFINE_3MM, series, affine, mask.shape)
    np.testing.assert_array_equal(mask, expected_mask)
    np.testing.assert_allclose(project_series(weights, series), expected, rtol=1e-6, atol=1e-6)
    assert not mask[0].any()  # the unlabelled slab: 3 mm voxels 0-2 hold every centre of coarse voxel 0


def test_cc200_coarse_grids(abide):
    weights, mask, affine = projection_operator(abide / "atlas" / "CC200.nii.gz", 4.0, 200)
    assert mask.shape == (48, 57, 46)  # ceil(63 / (4/3)), ceil(75 / (4/3)), ceil(61 / (4/3))
    assert weights.shape == (int(mask.sum()), 200) == (18384, 200)
    np.testing.assert_allclose(np.diag(affine)[:3], [-4, 4, 4])
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    # CC200 was drawn on a 4 mm grid: every 4 mm block of its 3 mm labels holds one region only.
    assert weights.nnz == weights.shape[0] and np.all(weights.data == 1.0)
    weights8, mask8, _ = projection_operator(abide / "atlas" / "CC200.nii.gz", 8.0, 200)
    assert mask8.shape == (24, 29, 23) and weights8.shape == (2391, 200)


def _real_subject(abide, participant_id):
    table = pq.read_table(abide / "timeseries_cc200.parquet", filters=[("participant_id", "==", participant_id)])
    return np.column_stack([table.column(f"roi_{r:03d}").to_numpy() for r in range(1, 201)])


def test_voxel_inside_one_region_carries_its_series(abide):
    weights, _, _ = projection_operator(abide / "atlas" / "CC200.nii.gz", 4.0, 200)
    region = weights.indices  # one region per coarse voxel (csr, one entry per row)
    series = _real_subject(abide, "sub-0050003").astype(np.float64)
    centred = series - series.mean(axis=0)
    zscored = centred / series.std(axis=0, ddof=1)
    np.testing.assert_allclose(projected_frames(weights, series, "voxel"), zscored[:, region], atol=1e-4)
    # "global": one SD pooled over every voxel and frame, so region r counts n_voxels(r) times.
    n_voxels = np.bincount(region, minlength=200)
    pooled = np.sqrt((n_voxels * (centred ** 2).sum(axis=0)).sum() / (series.shape[0] * region.size - 1))
    np.testing.assert_allclose(projected_frames(weights, series, "global"), centred[:, region] / pooled, atol=1e-4)


def test_constant_regions_project_to_zero():
    labels = np.broadcast_to(np.array([1, 1, 2, 2, 3, 3], dtype=np.int16)[:, None, None], (6, 2, 2))
    labels = nib.Nifti1Image(np.ascontiguousarray(labels), np.diag([3.0, 3, 3, 1]))
    series = np.random.default_rng(2).normal(size=(8, 3))
    series[:, 1] = 7.5
    np.testing.assert_array_equal(constant_regions(series), [1])
    weights, mask, _ = projection_operator(labels, 6.0)
    assert mask.shape == (3, 1, 1) and mask.all()
    for scaling in ("global", "voxel"):
        frames = projected_frames(weights, series, scaling)
        np.testing.assert_array_equal(frames[:, 1], 0.0)
        assert np.all(frames[:, [0, 2]].std(axis=0) > 0)


def test_absent_label_gives_zero_column(tiny_labels):
    weights, _, _ = projection_operator(tiny_labels, 4.0, n_regions=6)
    assert weights.shape[1] == 6
    np.testing.assert_array_equal(sparse.csc_array(weights)[:, [4, 5]].toarray(), 0.0)


def test_label_image_errors(tmp_path):
    affine = np.diag([3.0, 3, 3, 1])
    with pytest.raises(InputDataError, match="expected a 3D label image, found shape"):
        load_labels(nib.Nifti1Image(np.zeros((2, 2, 2, 2), dtype=np.int16), affine))
    path = tmp_path / "frac.nii.gz"
    nib.save(nib.Nifti1Image(np.full((2, 2, 2), 1.5, dtype=np.float32), affine), path)
    with pytest.raises(InputDataError, match=r"frac\.nii\.gz: expected non-negative integer labels"):
        load_labels(path)
    with pytest.raises(InputDataError, match="non-negative integer labels"):
        load_labels(nib.Nifti1Image(np.full((2, 2, 2), -1, dtype=np.int16), affine))
    with pytest.raises(InputDataError, match="expected labels 1..2, found largest label 3"):
        projection_operator(nib.Nifti1Image(np.full((2, 2, 2), 3, dtype=np.int16), affine), 6.0, n_regions=2)
    with pytest.raises(InputDataError, match="found largest label 0"):
        projection_operator(nib.Nifti1Image(np.zeros((2, 2, 2), dtype=np.int16), affine), 6.0)
    with pytest.raises(ConfigError, match="finer than the BOLD voxels"):
        projection_operator(nib.Nifti1Image(np.ones((2, 2, 2), dtype=np.int16), affine), 2.0)


def test_project_series_errors(tiny_labels):
    weights, _, _ = projection_operator(tiny_labels, 4.0)
    with pytest.raises(InputDataError, match=r"series shape \(6, 3\) does not match the projection's 4 regions"):
        project_series(weights, np.zeros((6, 3)))
    with pytest.raises(InputDataError, match="expected \\(n_timepoints, 4\\)"):
        project_series(weights, np.zeros(4))
    bad = np.zeros((6, 4))
    bad[2, 3] = np.nan
    with pytest.raises(InputDataError, match=r"non-finite values \(NaN/inf\) in regions \[3\]"):
        project_series(weights, bad)


def test_select_subjects_stratified(bench, abide):
    table = storage.read_tsv(abide / "participants.tsv")
    chosen = bench.select_subjects(table, 100, 42, None)
    assert len(chosen) == 100 and chosen.index.is_monotonic_increasing
    share = 100 * table["site"].value_counts() / len(table)
    counts = chosen["site"].value_counts().reindex(share.index, fill_value=0)
    assert np.all(np.abs(counts - share) < 1.01)  # systematic sampling: each site within 1 of its share
    pd.testing.assert_frame_equal(chosen, bench.select_subjects(table, 100, 42, None))
    assert set(chosen["participant_id"]) != set(bench.select_subjects(table, 100, 7, None)["participant_id"])
    two = bench.select_subjects(table, None, 42, ["NYU", "KKI"])
    assert set(two["site"]) == {"NYU", "KKI"} and len(two) == 175 + 48
    with pytest.raises(ValueError, match=r"--sites: unknown site\(s\) \['NOPE'\]; valid: \['CMU'"):
        bench.select_subjects(table, None, 42, ["NYU", "NOPE"])


def _roi_table(ids: list[str], t: list[int]) -> pa.Table:
    columns = {"participant_id": ids, "t": t} | {f"roi_{r:03d}": np.ones(len(ids), np.float32) * r
                                                  for r in range(1, 201)}
    return pa.table(columns)


def test_iter_subjects_streams_chosen_subjects(bench, tmp_path):
    path = tmp_path / "rois.parquet"
    pq.write_table(_roi_table(["sub-a"] * 3 + ["sub-b"] * 4 + ["sub-c"] * 2, [0, 1, 2, 0, 1, 2, 3, 0, 1]), path)
    got = list(bench.iter_subjects(path, {"sub-b", "sub-c"}, batch_size=2))  # subjects span batches
    assert [pid for pid, _, _ in got] == ["sub-b", "sub-c"]
    np.testing.assert_array_equal(got[0][1], [0, 1, 2, 3])
    assert got[0][2].shape == (4, 200) and got[0][2].dtype == np.float32
    np.testing.assert_array_equal(got[1][2][0], np.arange(1, 201))


def test_iter_subjects_errors(bench, tmp_path):
    path = tmp_path / "unsorted.parquet"
    pq.write_table(_roi_table(["sub-a", "sub-b", "sub-a"], [0, 0, 1]), path)
    with pytest.raises(InputDataError, match="unsorted.parquet: rows of sub-a are not contiguous"):
        list(bench.iter_subjects(path, {"sub-a"}))
    path = tmp_path / "narrow.parquet"
    pq.write_table(_roi_table(["sub-a"], [0]).drop_columns(["roi_200"]), path)
    with pytest.raises(InputDataError, match=r"narrow.parquet: missing columns \['roi_200'\]"):
        list(bench.iter_subjects(path, {"sub-a"}))


def test_script_end_to_end(bench, abide, tmp_path):
    out = tmp_path / "out"
    assert bench.main(["--out", str(out), "--max-subjects", "3", "--data", str(abide)]) == 0
    written = storage.read_tsv(out / "participants.tsv")
    assert list(written.columns) == ["participant_id", "age", "sex", "site"] and len(written) == 3
    assert written["site"].nunique() == 3  # stratified: three sites
    source = storage.read_tsv(abide / "participants.tsv").set_index("participant_id")
    for pid in written["participant_id"]:
        volumes = storage.read_volumes(out / "volumes" / f"{pid}_volumes.parquet")
        n_timepoints = int(source.loc[pid, "n_timepoints"])
        assert volumes.participant_id == pid and volumes.mask.shape == (48, 57, 46)
        assert volumes.data.shape == (n_timepoints, 18384) and int(volumes.mask.sum()) == 18384
        assert volumes.metadata["volume_scaling"] == "global" and volumes.metadata["volume_voxel_size"] == 4.0
        assert volumes.metadata["sources"]["timeseries"] == "timeseries_cc200.parquet"
        series = storage.read_timeseries(out / "series" / f"{pid}_atlas-cc200_timeseries.parquet")
        np.testing.assert_array_equal(series.data, _real_subject(abide, pid))
        weights, _, _ = projection_operator(abide / "atlas" / "CC200.nii.gz", 4.0, 200)
        expected = projected_frames(weights, series.data, "global")
        np.testing.assert_allclose(volumes.data.astype(np.float32), expected, atol=2e-3 * np.abs(expected).max())


def test_script_reports_errors(bench, abide, tmp_path, capsys):
    assert bench.main(["--out", str(tmp_path), "--sites", "NOPE", "--data", str(abide)]) == 1
    assert "unknown site(s) ['NOPE']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--out", str(tmp_path), "--max-subjects", "0"])


@pytest.fixture
def fake_data(abide, tmp_path):
    """A data folder like the ABIDE one: the real CC200 atlas (linked), two participants, ROI rows for sub-a only."""
    data = tmp_path / "data"
    (data / "atlas").mkdir(parents=True)
    (data / "atlas" / "CC200.nii.gz").symlink_to(abide / "atlas" / "CC200.nii.gz")
    participants = pd.DataFrame({"participant_id": ["sub-a", "sub-b"], "file_id": ["A_1", "B_1"], "site": ["A", "B"],
                                 "age": [10.0, 20.0], "sex": ["M", "F"], "n_timepoints": [3, 2]})
    storage.write_tsv(data / "participants.tsv", participants)
    pq.write_table(_roi_table(["sub-a"] * 3, [0, 1, 2]), data / "timeseries_cc200.parquet")
    return data


def test_script_subject_without_rows(bench, fake_data, tmp_path, capsys):
    assert bench.main(["--out", str(tmp_path / "out"), "--data", str(fake_data)]) == 1
    err = capsys.readouterr().err
    assert "timeseries_cc200.parquet: no rows for 1 subject(s) of participants.tsv: ['sub-b']" in err
    assert bench.main(["--out", str(tmp_path / "a"), "--data", str(fake_data), "--sites", "A", "--voxel-size", "8",
                       "--scaling", "voxel"]) == 0
    volumes = storage.read_volumes(tmp_path / "a" / "volumes" / "sub-a_volumes.parquet")
    # Every region is constant in the fake rows: all 8 mm voxels are 0 after scaling.
    assert volumes.data.shape == (3, 2391) and not volumes.data.any()
    assert volumes.metadata["constant_regions"][-1] == "roi_200" and volumes.metadata["volume_scaling"] == "voxel"


def test_script_time_points_checked(bench, fake_data, tmp_path, capsys):
    pq.write_table(_roi_table(["sub-a"] * 3, [0, 2, 3]), fake_data / "timeseries_cc200.parquet")
    assert bench.main(["--out", str(tmp_path / "out"), "--data", str(fake_data), "--sites", "A"]) == 1
    err = capsys.readouterr().err
    assert "sub-a has time points [0, 2, 3]..., expected 0..2 (participants.tsv n_timepoints)" in err
