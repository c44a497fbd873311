"""Atlases: k-means parcels of the MNI152 mask and user label images (brainage.download.atlas)."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from scipy import ndimage

from brainage.download.__main__ import main
from brainage.download.atlas import build_atlas, build_kmeans_atlas, prepare_file_atlas
from brainage.errors import ConfigError, InputDataError

N_REGIONS = 24


@pytest.fixture(scope="module")
def kmeans_atlas(tmp_path_factory):
    out = tmp_path_factory.mktemp("kmeans")
    build_kmeans_atlas(N_REGIONS, 7, out / "atlas.nii.gz", out / "atlas.tsv")
    return out


def _labels(path):
    img = nib.load(path)
    return img, np.asarray(img.dataobj)


def test_kmeans_atlas_has_n_named_non_empty_labels_on_the_mni_grid(kmeans_atlas):
    img, data = _labels(kmeans_atlas / "atlas.nii.gz")
    assert img.get_data_dtype() == np.int16
    assert img.shape == (99, 117, 95)  # nilearn's MNI152 2 mm grid
    np.testing.assert_allclose(np.diag(img.affine)[:3], [2.0, 2.0, 2.0])
    values, counts = np.unique(data, return_counts=True)
    assert list(values) == list(range(N_REGIONS + 1))  # 0 = background, then 1..n, none empty
    assert counts[1:].min() > 0.3 * counts[1:].mean()  # k-means parcels have similar volumes
    table = pd.read_csv(kmeans_atlas / "atlas.tsv", sep="\t")
    assert list(table.columns) == ["index", "name"]
    assert list(table["index"]) == list(range(1, N_REGIONS + 1))
    assert list(table["name"]) == [f"roi_{i:03d}" for i in range(1, N_REGIONS + 1)]


def test_kmeans_parcels_are_compact_and_numbered_by_position(kmeans_atlas):
    img, data = _labels(kmeans_atlas / "atlas.nii.gz")
    centroids = []
    # Equivalent-sphere radius of an average parcel (mm).
    radius = (3 * (data > 0).sum() * 8.0 / N_REGIONS / (4 * np.pi)) ** (1 / 3)
    for label in range(1, N_REGIONS + 1):
        parcel = data == label
        components, n = ndimage.label(parcel)
        largest = np.bincount(components[parcel]).max()
        assert largest >= 0.9 * parcel.sum(), f"parcel {label} is fragmented"
        xyz = nib.affines.apply_affine(img.affine, np.argwhere(parcel))
        centre = xyz.mean(axis=0)
        centroids.append(centre)
        assert np.linalg.norm(xyz - centre, axis=1).max() < 3.0 * radius, f"parcel {label} is elongated"
    x = np.array(centroids)[:, 0]
    # Labels follow the centroids' x (ties broken by y, z), up to the k-means centre vs voxel centroid gap.
    assert np.corrcoef(np.arange(N_REGIONS), x)[0, 1] > 0.9


def test_kmeans_atlas_is_deterministic_and_depends_on_the_seed(kmeans_atlas, tmp_path):
    build_kmeans_atlas(N_REGIONS, 7, tmp_path / "same.nii.gz", tmp_path / "same.tsv")
    build_kmeans_atlas(N_REGIONS, 8, tmp_path / "other.nii.gz", tmp_path / "other.tsv")
    _, first = _labels(kmeans_atlas / "atlas.nii.gz")
    _, same = _labels(tmp_path / "same.nii.gz")
    _, other = _labels(tmp_path / "other.nii.gz")
    np.testing.assert_array_equal(first, same)
    assert not np.array_equal(first, other)
    assert not list(tmp_path.glob(".tmp-*"))  # atomic writes leave nothing behind


def test_pcp_cc200_round_trips_with_the_pcp_column_names(shared_data, tmp_path):
    source = shared_data / "abide_pcp_atlases" / "CC200.nii.gz"
    prepare_file_atlas(source, tmp_path / "cc200.nii.gz", tmp_path / "cc200.tsv")
    original, copy = nib.load(source), nib.load(tmp_path / "cc200.nii.gz")
    np.testing.assert_array_equal(np.asarray(copy.dataobj), np.asarray(original.dataobj))
    np.testing.assert_array_equal(copy.affine, original.affine)
    table = pd.read_csv(tmp_path / "cc200.tsv", sep="\t")
    assert list(table["index"]) == list(range(1, 201))
    series = shared_data / "abide1_pcp_cpac_filtglobal_cc200" / "timeseries_cc200.parquet"
    roi_columns = [c for c in pq.read_schema(series).names if c.startswith("roi_")]
    assert list(table["name"]) == roi_columns == [f"roi_{i:03d}" for i in range(1, 201)]


def _save(tmp_path, data, name="labels.nii.gz"):
    path = tmp_path / name
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path


def test_file_atlas_names_use_the_label_values_and_drop_a_singleton_4th_axis(tmp_path):
    data = np.zeros((4, 4, 4, 1), dtype=np.float32)
    data[0, 0, 0], data[1, 1, 1], data[2, 2, 2] = 7, 2001, 7
    prepare_file_atlas(_save(tmp_path, data), tmp_path / "out.nii.gz", tmp_path / "out.tsv")
    table = pd.read_csv(tmp_path / "out.tsv", sep="\t")
    assert table.to_dict("list") == {"index": [7, 2001], "name": ["roi_007", "roi_2001"]}
    copy = nib.load(tmp_path / "out.nii.gz")
    assert copy.shape == (4, 4, 4) and copy.get_data_dtype() == np.int16


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (np.ones((3, 3, 3, 2), dtype=np.int16), r"expected a 3D label image, found shape \(3, 3, 3, 2\)"),
        (np.arange(27, dtype=np.float32).reshape(3, 3, 3) / 2, "expected integer label values"),
        (np.arange(27, dtype=np.int16).reshape(3, 3, 3) - 1, r"expected labels >= 0 .*found -1"),
        ((np.arange(27) > 20).astype(np.int16).reshape(3, 3, 3), "expected at least 2 non-zero labels, found 1"),
    ],
)
def test_file_atlas_rejects_bad_label_images(tmp_path, data, match):
    path = _save(tmp_path, data)
    with pytest.raises(InputDataError, match=match) as err:
        prepare_file_atlas(path, tmp_path / "out.nii.gz", tmp_path / "out.tsv")
    assert str(path) in str(err.value)
    assert not (tmp_path / "out.nii.gz").exists()


def test_file_atlas_rejects_unreadable_and_missing_files(tmp_path):
    broken = tmp_path / "broken.nii.gz"
    broken.write_text("not an image")
    with pytest.raises(InputDataError, match="broken.nii.gz: cannot be read as a NIfTI label image"):
        prepare_file_atlas(broken, tmp_path / "out.nii.gz", tmp_path / "out.tsv")
    with pytest.raises(FileNotFoundError, match=r"missing.nii.gz not found \(atlas.path\)"):
        prepare_file_atlas(tmp_path / "missing.nii.gz", tmp_path / "out.nii.gz", tmp_path / "out.tsv")


def test_build_atlas_dispatches_on_the_name(shared_data, tmp_path):
    source = shared_data / "abide_pcp_atlases" / "CC200.nii.gz"
    build_atlas({"name": "file", "n_regions": 100, "path": str(source)}, 0, tmp_path / "f.nii.gz", tmp_path / "f.tsv")
    assert len(pd.read_csv(tmp_path / "f.tsv", sep="\t")) == 200
    build_atlas({"name": "kmeans", "n_regions": 5, "path": None}, 0, tmp_path / "k.nii.gz", tmp_path / "k.tsv")
    assert len(pd.read_csv(tmp_path / "k.tsv", sep="\t")) == 5


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"name": "aal", "n_regions": 100, "path": None}, r"atlas.name must be one of kmeans, file; found 'aal'"),
        ({"name": "file", "n_regions": 100, "path": None}, "atlas.path is null"),
        ({"name": "kmeans", "path": None}, "atlas parameters lack atlas.n_regions"),
        ({"n_regions": 100}, "atlas parameters lack atlas.name"),
        ({"name": "kmeans", "n_regions": 1, "path": None}, "atlas.n_regions must be an integer >= 2, found 1"),
    ],
)
def test_build_atlas_rejects_bad_parameters(tmp_path, params, match):
    with pytest.raises(ConfigError, match=match):
        build_atlas(params, 0, tmp_path / "a.nii.gz", tmp_path / "a.tsv")


def test_cli_atlas_verb(tmp_path, capsys):
    params = {"name": "kmeans", "n_regions": 3, "path": None}
    argv = ["atlas", "--params", json.dumps(params), "--seed", "1", "--out", str(tmp_path / "a.nii.gz")]
    assert main([*argv, "--labels-out", str(tmp_path / "a.tsv")]) == 0
    assert list(pd.read_csv(tmp_path / "a.tsv", sep="\t")["name"]) == ["roi_001", "roi_002", "roi_003"]
    bad = ["atlas", "--params", json.dumps({**params, "name": "aal"}), "--seed", "1"]
    assert main([*bad, "--out", str(tmp_path / "b.nii.gz"), "--labels-out", str(tmp_path / "b.tsv")]) == 1
    # The CLI logs to stderr (set up by brainage._cli.run).
    assert "atlas.name must be one of" in capsys.readouterr().err
