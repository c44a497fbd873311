"""Atlas registry: spec validation and ids, the standard folder, offline atlases (brainage.download.atlas)."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from scipy import ndimage

from brainage.download.__main__ import main
from brainage.download.atlas import ATLAS_NAMES, atlas_id, build_atlas, validate_spec
from brainage.errors import ConfigError, InputDataError

N_REGIONS = 24


def build(spec, out, seed=7, **kwargs):
    """Build into ``out`` (data_dir beside it: nothing is downloaded here); return (meta, labels, image)."""
    build_atlas(spec, seed, out, data_dir=out.parent / "nilearn_data", **kwargs)
    meta = json.loads((out / "atlas.json").read_text())
    labels = pd.read_csv(out / "labels.tsv", sep="\t", keep_default_na=False)
    image = nib.load(out / "atlas.nii.gz") if meta["image"] else None
    return meta, labels, image


@pytest.fixture(scope="module")
def kmeans_atlas(tmp_path_factory):
    return build({"name": "kmeans", "n_regions": N_REGIONS}, tmp_path_factory.mktemp("kmeans") / "atlas")


# ----------------------------------------------------------------------------- specs and ids


@pytest.mark.parametrize(("spec", "expected"), [
    ({"name": "kmeans"}, {"name": "kmeans", "n_regions": 100, "id": "kmeans100"}),
    ({"name": "schaefer"}, {"name": "schaefer", "n_rois": 400, "yeo_networks": 7, "resolution_mm": 2,
                            "id": "schaefer400n7"}),
    ({"name": "schaefer", "n_rois": 200, "yeo_networks": 17, "resolution_mm": 1}, {"id": "schaefer200n17r1"}),
    ({"name": "msdl"}, {"name": "msdl", "id": "msdl"}),
    ({"name": "basc"}, {"resolution": 122, "version": "sym", "id": "basc122sym"}),
    ({"name": "harvard_oxford"}, {"atlas_name": "cort-maxprob-thr25-2mm", "symmetric_split": False,
                                  "id": "hocortmaxprobthr25"}),
    ({"name": "harvard_oxford", "atlas_name": "sub-maxprob-thr50-1mm", "symmetric_split": True},
     {"id": "hosubmaxprobthr50r1split"}),
    ({"name": "pcp"}, {"atlas": "cc200", "id": "cc200"}),
    ({"name": "pcp", "atlas": "cc400"}, {"id": "cc400"}),
    ({"name": "pcp", "atlas": "aal"}, {"id": "aal"}),
    ({"name": "pcp", "atlas": "ho"}, {"id": "ho"}),
    ({"name": "pcp", "atlas": "ez"}, {"id": "ez"}),
    ({"name": "pcp", "atlas": "tt"}, {"id": "tt"}),
    ({"name": "pcp", "atlas": "dosenbach160"}, {"id": "pcpdosenbach160"}),
    ({"name": "power"}, {"radius_mm": 5.0, "id": "power264"}),
    ({"name": "power", "radius_mm": 7.5}, {"radius_mm": 7.5, "id": "power264r7p5"}),
    ({"name": "dosenbach", "radius_mm": 4}, {"radius_mm": 4.0, "id": "dosenbach160r4"}),
    ({"name": "file", "path": "atlases/My_CC-200.nii.gz"}, {"labels": None, "id": "mycc200"}),
    ({"name": "kmeans", "n_regions": 50, "id": "Km50"}, {"n_regions": 50, "id": "Km50"}),
])
def test_validate_spec_fills_defaults_and_the_id(spec, expected):
    done = validate_spec(spec)
    assert done.items() >= expected.items()
    assert done == validate_spec(done)  # idempotent: common.smk and the rule both call it
    assert "id" not in spec or spec["id"] == done["id"]  # a new dict, the input is untouched
    assert atlas_id(done) == done["id"]
    assert type(done.get("radius_mm", 0.0)) is float


def test_every_registered_atlas_has_an_id_from_its_defaults():
    ids = {name: validate_spec({"name": name, "path": "x.nii"})["id"] if name == "file"
           else validate_spec({"name": name})["id"] for name in ATLAS_NAMES}
    assert set(ATLAS_NAMES) == {"kmeans", "file", "schaefer", "harvard_oxford", "msdl", "basc", "pcp", "power",
                                "dosenbach"}
    assert len(set(ids.values())) == len(ids)
    assert all(i.isalnum() and i.islower() for i in ids.values())


@pytest.mark.parametrize(("spec", "match"), [
    ({"name": "aal"}, r"unknown atlas name 'aal'; valid names: kmeans, file, schaefer, harvard_oxford, msdl, "
                      r"basc, pcp, power, dosenbach"),
    ({"n_rois": 100}, r"unknown atlas name None; valid names: kmeans"),
    ([1, 2], r"each entry must be a mapping with a 'name', found \[1, 2\]"),
    ({"name": "schaefer", "n_roi": 100}, r"atlas 'schaefer': unknown key\(s\) n_roi; valid parameters: n_rois "
                                         r"\(100, 200, .*1000\); yeo_networks \(7, 17\); resolution_mm \(1, 2\); id"),
    ({"name": "msdl", "resolution": 2}, r"atlas 'msdl': unknown key\(s\) resolution; valid parameters: none"),
    ({"name": "schaefer", "n_rois": 150}, r"atlas 'schaefer': n_rois must be 100, 200, .*; found 150"),
    ({"name": "schaefer", "yeo_networks": "7"}, r"yeo_networks must be 7, 17; found '7'"),
    ({"name": "harvard_oxford", "atlas_name": "cort-prob-2mm"},
     r"atlas_name must be 'cort-maxprob-thr0-1mm', .*'sub-maxprob-thr50-2mm'; found 'cort-prob-2mm'"),
    ({"name": "harvard_oxford", "symmetric_split": 1}, r"symmetric_split must be False, True; found 1"),
    ({"name": "basc", "resolution": 44}, r"atlas 'basc': resolution must be 7, 12, .*444; found 44"),
    ({"name": "basc", "version": "sim"}, r"version must be 'sym', 'asym'; found 'sim'"),
    ({"name": "pcp", "atlas": "cc100"}, r"atlas must be 'cc200', .*'dosenbach160'; found 'cc100'"),
    ({"name": "power", "radius_mm": 0}, r"atlas 'power': radius_mm must be a number of mm > 0; found 0"),
    ({"name": "power", "radius_mm": True}, r"radius_mm must be a number of mm > 0; found True"),
    ({"name": "kmeans", "n_regions": 1}, r"atlas 'kmeans': n_regions must be an integer >= 2; found 1"),
    ({"name": "file"}, r"atlas 'file': missing key 'path' \(the path of a NIfTI label image\)"),
    ({"name": "file", "path": "a.nii", "labels": 3}, r"labels must be null or the path of a TSV"),
    ({"name": "file", "path": "__.nii.gz"}, r"cannot derive an id from the file name '__.nii.gz'; set id:"),
    ({"name": "msdl", "id": "msdl-2"}, r"atlas 'msdl': id must be letters and digits only .* found 'msdl-2'"),
])
def test_validate_spec_rejects_bad_specs_naming_the_atlas_and_key(spec, match):
    with pytest.raises(ConfigError, match=match):
        validate_spec(spec)


def test_validate_spec_imports_no_imaging_library():
    import subprocess
    import sys

    code = ("import sys; from brainage.download.atlas import validate_spec; validate_spec({'name': 'schaefer'}); "
            "print(sorted(m for m in ('nilearn', 'nibabel', 'pandas', 'requests') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_build_atlas_rejects_bad_urls(tmp_path):
    with pytest.raises(ConfigError, match=r"atlas_fetch.urls: 'kmeans' is not a downloaded atlas; valid keys: "
                                          r"schaefer, harvard_oxford, msdl, basc, pcp"):
        build_atlas({"name": "msdl"}, 0, tmp_path / "a", data_dir=tmp_path, urls={"kmeans": "http://x/"})
    with pytest.raises(ConfigError, match=r"atlas_fetch.urls.msdl: expected an http:// or https:// base URL, "
                                          r"found 'ftp://x/'"):
        build_atlas({"name": "msdl"}, 0, tmp_path / "a", data_dir=tmp_path, urls={"msdl": "ftp://x/"})
    assert not (tmp_path / "a").exists()


# ----------------------------------------------------------------------------- kmeans


def test_kmeans_atlas_has_n_named_non_empty_labels_on_the_mni_grid(kmeans_atlas):
    meta, table, img = kmeans_atlas
    assert meta == {"id": "kmeans24", "name": "kmeans", "kind": "labels", "image": "atlas.nii.gz", "radius_mm": None,
                    "allow_overlap": False, "space": "MNI152NLin2009aSym", "source": "generated",
                    "citation": meta["citation"], "spec": {"name": "kmeans", "n_regions": N_REGIONS, "id": "kmeans24"}}
    assert "Craddock" in meta["citation"]
    assert img.get_data_dtype() == np.int16
    assert img.shape == (99, 117, 95)  # nilearn's MNI152 2 mm grid
    np.testing.assert_allclose(np.diag(img.affine)[:3], [2.0, 2.0, 2.0])
    values, counts = np.unique(np.asarray(img.dataobj), return_counts=True)
    assert list(values) == list(range(N_REGIONS + 1))  # 0 = background, then 1..n, none empty
    assert counts[1:].min() > 0.3 * counts[1:].mean()  # k-means parcels have similar volumes
    assert list(table.columns) == ["index", "name"]
    assert list(table["index"]) == list(range(1, N_REGIONS + 1))
    assert list(table["name"]) == [f"roi_{i:03d}" for i in range(1, N_REGIONS + 1)]


def test_kmeans_parcels_are_compact_and_numbered_by_position(kmeans_atlas):
    _, _, img = kmeans_atlas
    data = np.asarray(img.dataobj)
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
    spec = {"name": "kmeans", "n_regions": N_REGIONS}
    _, _, same = build(spec, tmp_path / "same", seed=7)
    _, _, other = build(spec, tmp_path / "other", seed=8)
    first = np.asarray(kmeans_atlas[2].dataobj)
    np.testing.assert_array_equal(first, np.asarray(same.dataobj))
    assert not np.array_equal(first, np.asarray(other.dataobj))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other", "same"]  # no temporary folder left


def test_kmeans_rejects_more_parcels_than_voxels_and_leaves_no_folder(tmp_path):
    with pytest.raises(ConfigError, match=r"atlas 'kmeans': n_regions \(10000000\) exceeds the \d+ voxels"):
        build_atlas({"name": "kmeans", "n_regions": 10_000_000}, 0, tmp_path / "a", data_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- file


def _save(tmp_path, data, name="labels.nii.gz"):
    path = tmp_path / name
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path


def test_pcp_cc200_file_round_trips_with_the_pcp_column_names(shared_data, tmp_path):
    source = shared_data / "abide_pcp_atlases" / "CC200.nii.gz"
    meta, table, copy = build({"name": "file", "path": str(source)}, tmp_path / "cc200")
    original = nib.load(source)
    np.testing.assert_array_equal(np.asarray(copy.dataobj), np.asarray(original.dataobj))
    np.testing.assert_array_equal(copy.affine, original.affine)
    assert meta["id"] == "cc200" and meta["kind"] == "labels" and meta["source"] == str(source.resolve())
    assert list(table["index"]) == list(range(1, 201))
    series = shared_data / "abide1_pcp_cpac_filtglobal_cc200" / "timeseries_cc200.parquet"
    roi_columns = [c for c in pq.read_schema(series).names if c.startswith("roi_")]
    assert list(table["name"]) == roi_columns == [f"roi_{i:03d}" for i in range(1, 201)]


def test_file_atlas_names_use_the_label_values_and_drop_a_singleton_4th_axis(tmp_path):
    data = np.zeros((4, 4, 4, 1), dtype=np.float32)
    data[0, 0, 0], data[1, 1, 1], data[2, 2, 2] = 7, 2001, 7
    _, table, copy = build({"name": "file", "path": str(_save(tmp_path, data))}, tmp_path / "out")
    assert table.to_dict("list") == {"index": [7, 2001], "name": ["roi_007", "roi_2001"]}
    assert copy.shape == (4, 4, 4) and copy.get_data_dtype() == np.int16


def test_file_atlas_takes_its_own_label_table(tmp_path):
    data = np.zeros((4, 4, 4), dtype=np.int16)
    data[0], data[1], data[2] = 3, 5, 3
    image = _save(tmp_path, data)
    pd.DataFrame({"index": [5, 3, 9], "name": ["b", "a", "unused"], "network": ["N1", "N2", "N3"]}).to_csv(
        tmp_path / "lut.tsv", sep="\t", index=False)
    spec = {"name": "file", "path": str(image), "labels": str(tmp_path / "lut.tsv"), "id": "mine"}
    meta, table, _ = build(spec, tmp_path / "out")
    # Sorted by value; the row of a label without voxels (9) is left out.
    assert table.to_dict("list") == {"index": [3, 5], "name": ["a", "b"], "network": ["N2", "N1"]}
    assert meta["id"] == "mine" and meta["spec"]["labels"] == str(tmp_path / "lut.tsv")


@pytest.mark.parametrize(("rows", "match"), [
    ({"index": [3], "name": ["a"]}, r"lut.tsv: no row for labels \[5\] of .*labels.nii.gz"),
    ({"value": [3, 5], "name": ["a", "b"]}, r"lut.tsv: expected columns index \(integers\) and name"),
    ({"index": [3, 5], "name": ["a", "a"]}, r"region names must be unique and non-empty, found \['a'\]"),
])
def test_file_atlas_rejects_a_bad_label_table(tmp_path, rows, match):
    data = np.zeros((4, 4, 4), dtype=np.int16)
    data[0], data[1] = 3, 5
    pd.DataFrame(rows).to_csv(tmp_path / "lut.tsv", sep="\t", index=False)
    spec = {"name": "file", "path": str(_save(tmp_path, data)), "labels": str(tmp_path / "lut.tsv")}
    with pytest.raises(InputDataError, match=match):
        build_atlas(spec, 0, tmp_path / "out", data_dir=tmp_path)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("data", "match"), [
    (np.ones((3, 3, 3, 2), dtype=np.int16), r"expected a 3D label image, found shape \(3, 3, 3, 2\)"),
    (np.arange(27, dtype=np.float32).reshape(3, 3, 3) / 2, "expected integer label values"),
    (np.arange(27, dtype=np.int16).reshape(3, 3, 3) - 1, r"expected labels >= 0 .*found -1"),
    ((np.arange(27) > 20).astype(np.int16).reshape(3, 3, 3), "expected at least 2 non-zero labels, found 1"),
])
def test_file_atlas_rejects_bad_label_images(tmp_path, data, match):
    path = _save(tmp_path, data)
    with pytest.raises(InputDataError, match=match) as err:
        build_atlas({"name": "file", "path": str(path)}, 0, tmp_path / "out", data_dir=tmp_path)
    assert str(path) in str(err.value)
    assert not (tmp_path / "out").exists()


def test_file_atlas_rejects_unreadable_and_missing_files(tmp_path):
    broken = tmp_path / "broken.nii.gz"
    broken.write_text("not an image")
    with pytest.raises(InputDataError, match="broken.nii.gz: cannot be read as a NIfTI label image"):
        build_atlas({"name": "file", "path": str(broken)}, 0, tmp_path / "out", data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"missing.nii.gz not found \(atlases\[\].path\)"):
        build_atlas({"name": "file", "path": str(tmp_path / "missing.nii.gz")}, 0, tmp_path / "out", data_dir=tmp_path)
    image = _save(tmp_path, np.arange(8, dtype=np.int16).reshape(2, 2, 2))
    with pytest.raises(FileNotFoundError, match=r"nolut.tsv not found \(atlases\[\].labels\)"):
        build_atlas({"name": "file", "path": str(image), "labels": str(tmp_path / "nolut.tsv")}, 0, tmp_path / "out",
                    data_dir=tmp_path)


def test_a_rebuild_replaces_the_folder_and_a_failed_one_keeps_the_old(tmp_path):
    data = np.zeros((4, 4, 4), dtype=np.int16)
    data[0], data[1] = 1, 2
    image = _save(tmp_path, data)
    out = tmp_path / "atlases" / "a"
    build({"name": "file", "path": str(image), "id": "a"}, out)
    data[2] = 3
    _save(tmp_path, data)
    _, table, _ = build({"name": "file", "path": str(image), "id": "a"}, out)
    assert list(table["index"]) == [1, 2, 3]
    _save(tmp_path, data.astype(np.float32) / 2)
    with pytest.raises(InputDataError, match="expected integer label values"):
        build_atlas({"name": "file", "path": str(image), "id": "a"}, 0, out, data_dir=tmp_path)
    assert list(pd.read_csv(out / "labels.tsv", sep="\t")["index"]) == [1, 2, 3]
    assert [p.name for p in out.parent.iterdir()] == ["a"]


# ----------------------------------------------------------------------------- spheres


def test_power_spheres_are_the_shipped_264_coordinates_without_overlap(tmp_path):
    from nilearn.datasets import fetch_coords_power_2011

    meta, table, image = build({"name": "power"}, tmp_path / "power")
    assert image is None and not (tmp_path / "power" / "atlas.nii.gz").exists()
    assert meta["kind"] == "spheres" and meta["image"] is None and meta["radius_mm"] == 5.0
    assert meta["allow_overlap"] is False and meta["source"].startswith("nilearn ") and "Neuron" in meta["citation"]
    assert list(table.columns) == ["index", "name", "x", "y", "z"]
    assert list(table["index"]) == list(range(1, 265))
    assert table["name"].iloc[0] == "roi_001" and table["name"].iloc[-1] == "roi_264"
    shipped = fetch_coords_power_2011().rois
    np.testing.assert_array_equal(table[["x", "y", "z"]].to_numpy(), shipped[["x", "y", "z"]].to_numpy(float))
    assert table.iloc[0][["x", "y", "z"]].tolist() == [-25, -98, -12]  # Power 2011 ROI 1


@pytest.mark.parametrize(("radius", "shared"), [(5.0, False), (5.5, True)])
def test_power_spheres_at_5mm_share_no_voxel_of_the_2mm_grid(radius, shared):
    # The voxels within radius of each centre, as nilearn's NiftiSpheresMasker selects them
    # (sklearn BallTree query_radius, distance <= radius). nilearn itself, run once on the
    # 2 mm MNI grid (27 s, too slow here), accepts allow_overlap=False at 5 mm and reports
    # "Overlap detected between spheres" at 5.5 mm: the same answer.
    from nilearn.datasets import fetch_coords_power_2011
    from scipy.spatial import cKDTree

    coords = fetch_coords_power_2011().rois[["x", "y", "z"]].to_numpy(float)
    lo, hi = np.floor(coords.min(0) / 2) * 2 - 8, np.ceil(coords.max(0) / 2) * 2 + 8
    grid = np.stack(np.meshgrid(*[np.arange(a, b + 1, 2.0) for a, b in zip(lo, hi)], indexing="ij"), -1)
    balls = cKDTree(grid.reshape(-1, 3)).query_ball_point(coords, r=radius)
    counts = np.bincount(np.concatenate(balls))
    assert bool(counts.max() > 1) == shared


def test_dosenbach_spheres_keep_the_paper_order_and_overlap_at_5mm(tmp_path, caplog):
    meta, table, _ = build({"name": "dosenbach"}, tmp_path / "dos")
    assert meta["id"] == "dosenbach160" and len(table) == 160
    assert list(table.columns) == ["index", "name", "network", "x", "y", "z"]
    assert table.iloc[0].tolist()[:6] == [1, "vmPFC 1", "default", 6, 64, 3]  # Dosenbach ROI 1
    assert table["name"].is_unique and table["network"].nunique() == 6
    # One pair of centres is 8.5 mm apart: 5 mm spheres overlap, 4 mm ones do not.
    assert meta["allow_overlap"] is True
    assert "spheres of 5.0 mm overlap" in caplog.text
    assert build({"name": "dosenbach", "radius_mm": 4}, tmp_path / "dos4")[0]["allow_overlap"] is False


# ----------------------------------------------------------------------------- CLI


def test_cli_atlas_verb(tmp_path, capsys):
    argv = ["atlas", "--spec", json.dumps({"name": "kmeans", "n_regions": 3}), "--seed", "1",
            "--out-dir", str(tmp_path / "k"), "--data-dir", str(tmp_path / "nd"), "--urls", "{}"]
    assert main(argv) == 0
    assert list(pd.read_csv(tmp_path / "k" / "labels.tsv", sep="\t")["name"]) == ["roi_001", "roi_002", "roi_003"]
    assert json.loads((tmp_path / "k" / "atlas.json").read_text())["id"] == "kmeans3"
    bad = ["atlas", "--spec", json.dumps({"name": "aal"}), "--seed", "1", "--out-dir", str(tmp_path / "b"),
           "--data-dir", str(tmp_path / "nd")]
    assert main(bad) == 1
    # The CLI logs to stderr (set up by brainage._cli.run).
    assert "unknown atlas name 'aal'; valid names:" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
