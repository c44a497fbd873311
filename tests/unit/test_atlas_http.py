"""Downloaded atlases from a real loopback HTTP server: Schaefer, Harvard-Oxford, MSDL, BASC, PCP; errors, retries."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from atlas_server import (  # noqa: F401 (atlas_mirror is a fixture)
    BASC_PATH,
    HO_CORT,
    MSDL_NAMES,
    MSDL_PATH,
    PCP_PATH,
    SCHAEFER_PATH,
    atlas_mirror,
    free_port,
    schaefer_names,
)

from brainage.download.atlas import build_atlas
from brainage.download.atlas import http
from brainage.errors import DownloadError


@pytest.fixture
def mirror(atlas_mirror):
    atlas_mirror.requests.clear()
    atlas_mirror.faults.clear()
    return atlas_mirror


def build(spec, tmp_path, urls, name="out"):
    """Build into tmp_path/name with a fresh nilearn data folder; return (meta, labels, image)."""
    out = tmp_path / name
    build_atlas(spec, 0, out, data_dir=tmp_path / "nilearn_data", urls=urls)
    meta = json.loads((out / "atlas.json").read_text())
    labels = pd.read_csv(out / "labels.tsv", sep="\t", keep_default_na=False)
    return meta, labels, nib.load(out / "atlas.nii.gz") if meta["image"] else None


def _values(img):
    data = np.asarray(img.dataobj)
    return sorted(np.unique(data[data != 0]).tolist())


def test_schaefer_100x7_from_the_mirror_has_the_lut_names_and_networks(mirror, tmp_path):
    urls = mirror.urls()
    meta, table, img = build({"name": "schaefer", "n_rois": 100}, tmp_path, urls)
    image_name = "Schaefer2018_100Parcels_7Networks_order_FSLMNI152_2mm.nii.gz"
    assert meta["id"] == "schaefer100n7" and meta["kind"] == "labels" and meta["space"] == "MNI152NLin6Asym"
    assert meta["source"] == urls["schaefer"] + image_name and "Cereb Cortex" in meta["citation"]
    assert list(table["index"]) == list(range(1, 101)) == _values(img)
    assert list(table["name"]) == schaefer_names(100)
    assert table["name"].iloc[0] == "7Networks_LH_Vis_1" and table["name"].iloc[-1] == "7Networks_RH_Default_7"
    assert table["network"].iloc[0] == "Vis" and set(table["network"]) == {
        "Vis", "SomMot", "DorsAttn", "SalVentAttn", "Limbic", "Cont", "Default"}
    assert img.get_data_dtype() == np.int16 and img.shape == (99, 117, 95)
    assert {path.rsplit("/", 1)[1] for path, _ in mirror.requests} == {
        image_name, "Schaefer2018_100Parcels_7Networks_order.txt"}
    # Cached in data_dir: a rebuild downloads nothing.
    mirror.requests.clear()
    build({"name": "schaefer", "n_rois": 100}, tmp_path, urls, name="again")
    assert mirror.requests == []


def test_harvard_oxford_sub_leaves_out_an_empty_region(mirror, tmp_path):
    with pytest.warns(UserWarning, match="missing from the atlas image"):  # nilearn's, about Left Amygdala
        meta, table, img = build({"name": "harvard_oxford", "atlas_name": "sub-maxprob-thr25-2mm"}, tmp_path,
                                 mirror.urls())
    assert meta["id"] == "hosubmaxprobthr25" and meta["source"] == mirror.urls()["harvard_oxford"] + "HarvardOxford.tgz"
    # "Left Amygdala" (value 4) has no voxel: left out of the table, as the contract wants.
    assert table.to_dict("list") == {"index": [1, 2, 3], "name": ["Left Thalamus", "Right Thalamus", "Brain-Stem"]}
    assert _values(img) == [1, 2, 3]
    assert img.affine[0, 0] > 0  # nilearn reorders FSL's flipped (LAS) grid


def test_harvard_oxford_symmetric_split_names_the_hemispheres(mirror, tmp_path):
    meta, table, img = build({"name": "harvard_oxford", "atlas_name": "sub-maxprob-thr25-2mm",
                              "symmetric_split": True}, tmp_path, mirror.urls())
    assert meta["id"] == "hosubmaxprobthr25split"
    assert list(table["name"]) == ["Left Thalamus", "Right Thalamus", "Left Brain-Stem", "Right Brain-Stem"]
    assert _values(img) == [1, 2, 3, 4]
    data, x = np.asarray(img.dataobj), nib.affines.apply_affine(img.affine, np.argwhere(np.asarray(img.dataobj) == 3))
    assert (x[:, 0] < 0).all()  # "Left Brain-Stem" lies at negative x (left in RAS)
    assert (data == 4).sum() > 0


def test_harvard_oxford_cortical_split_reads_the_lateralised_atlas(mirror, tmp_path):
    _, table, img = build({"name": "harvard_oxford", "symmetric_split": True}, tmp_path, mirror.urls())
    assert list(table["name"]) == [f"{side} {name}" for name in HO_CORT for side in ("Left", "Right")]
    assert _values(img) == list(range(1, 7))
    _, plain, _ = build({"name": "harvard_oxford"}, tmp_path, mirror.urls(), name="plain")
    assert list(plain["name"]) == list(HO_CORT)


def test_msdl_is_39_float32_maps_with_names_and_networks(mirror, tmp_path):
    meta, table, img = build({"name": "msdl"}, tmp_path, mirror.urls())
    assert meta["kind"] == "maps" and meta["image"] == "atlas.nii.gz" and meta["space"] == "MNI152"
    assert img.shape == (40, 48, 35, 39) and img.get_data_dtype() == np.float32
    assert list(table["index"]) == list(range(1, 40)) and list(table["name"]) == list(MSDL_NAMES)
    assert table["network"].iloc[0] == "Aud"
    data = np.asarray(img.dataobj)
    assert all(data[..., k].max() > 0.9 for k in range(39))  # volume k-1 holds map k


@pytest.mark.parametrize(("version", "number"), [("sym", "1861819"), ("asym", "1861820")])
def test_basc_resolution_and_version_pick_the_archive_member(mirror, tmp_path, version, number):
    meta, table, img = build({"name": "basc", "resolution": 7, "version": version}, tmp_path, mirror.urls())
    assert meta["id"] == f"basc7{version}" and meta["source"] == mirror.url + BASC_PATH + number
    assert meta["space"] == f"MNI152{version}"  # what nilearn says
    assert list(table["name"]) == [f"roi_{i:03d}" for i in range(1, 8)] and _values(img) == list(range(1, 8))
    assert [path for path, _ in mirror.requests] == [BASC_PATH + number]


@pytest.mark.parametrize(("atlas", "n_labels", "first", "last"), [
    ("cc200", 200, "roi_001", "roi_200"),
    ("cc400", 392, "roi_001", "roi_400"),  # 392 of the 400 CC400 labels have voxels
    ("aal", 116, "roi_2001", "roi_9170"),
    ("ho", 111, "roi_010", "roi_4802"),
    ("ez", 116, "roi_001", "roi_116"),
    ("tt", 97, "roi_2001", "roi_7702"),
    ("dosenbach160", 161, "roi_001", "roi_223"),
])
def test_pcp_label_images_are_the_real_files(mirror, tmp_path, shared_data, atlas, n_labels, first, last):
    meta, table, img = build({"name": "pcp", "atlas": atlas}, tmp_path, mirror.urls())
    assert len(table) == n_labels == len(_values(img)) and table["name"].iloc[[0, -1]].tolist() == [first, last]
    assert meta["space"] == "MNI152 (FSL)" and meta["source"].startswith(mirror.url + PCP_PATH)
    original = nib.load(shared_data / "abide_pcp_atlases" / meta["source"].rsplit("/", 1)[1])
    np.testing.assert_array_equal(np.asarray(img.dataobj), np.asarray(original.dataobj))
    np.testing.assert_array_equal(img.affine, original.affine)
    assert img.get_data_dtype() == np.int16


def test_an_unreachable_server_gives_one_error_and_no_folder(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/mirror/"
    with pytest.raises(DownloadError) as err:
        build_atlas({"name": "pcp"}, 0, tmp_path / "cc200", data_dir=tmp_path / "nd", urls={"pcp": url})
    message = str(err.value)
    assert message.startswith(f"atlas 'pcp': cannot download {url}CC200.nii.gz: the server cannot be reached (")
    assert "Connection refused" in message and "attempts" not in message  # refused: not tried again
    assert "set atlas_fetch.urls.pcp to the base URL of a mirror" in message
    assert "{name: file, path: <label image>}" in message and "Traceback" not in message
    assert not (tmp_path / "cc200").exists()


@pytest.mark.parametrize(("spec", "key"), [({"name": "schaefer", "n_rois": 100}, "schaefer"),
                                           ({"name": "harvard_oxford"}, "harvard_oxford"),
                                           ({"name": "msdl"}, "msdl"), ({"name": "basc"}, "basc")])
def test_every_nilearn_atlas_names_its_url_when_unreachable(tmp_path, spec, key):
    url = f"http://127.0.0.1:{free_port()}/"
    with pytest.raises(DownloadError, match=rf"atlas '{key}': cannot download http://127.0.0.1:\d+/\S+: the server "
                                            rf"cannot be reached .*set atlas_fetch.urls.{key} to"):
        build_atlas(spec, 0, tmp_path / "a", data_dir=tmp_path / "nd", urls={key: url})
    assert not (tmp_path / "a").exists()


def test_a_missing_file_on_the_mirror_is_an_http_error(mirror, tmp_path):
    urls = {"pcp": mirror.url + "/elsewhere/"}
    with pytest.raises(DownloadError, match=r"atlas 'pcp': cannot download http://127.0.0.1:\d+/elsewhere/"
                                            r"CC400.nii.gz: HTTP 404 Not Found\. Without network access"):
        build_atlas({"name": "pcp", "atlas": "cc400"}, 0, tmp_path / "a", data_dir=tmp_path / "nd", urls=urls)


def test_a_file_with_the_wrong_checksum_is_rejected_and_not_kept(mirror, tmp_path):
    # CC200.nii.gz served where CC400.nii.gz is expected: its md5 is not CC400's.
    wrong = mirror.root / "wrong" / "CC400.nii.gz"
    wrong.parent.mkdir(exist_ok=True)
    wrong.write_bytes((mirror.root / PCP_PATH.strip("/") / "CC200.nii.gz").read_bytes())
    for _ in range(2):  # the second run downloads again instead of trusting the first one's file
        mirror.requests.clear()
        with pytest.raises(DownloadError, match=r"wrong/CC400.nii.gz: unexpected content: .*checksum verification"):
            build_atlas({"name": "pcp", "atlas": "cc400"}, 0, tmp_path / "a", data_dir=tmp_path / "nd",
                        urls={"pcp": mirror.url + "/wrong/"})
        assert mirror.requests == [("/wrong/CC400.nii.gz", None)]
    assert not any(p.is_file() for p in (tmp_path / "nd").rglob("*"))


def test_an_archive_without_the_expected_member_is_named(mirror, tmp_path):
    with pytest.raises(DownloadError, match=r"atlas 'basc': cannot download .*/files/1861819: unexpected content: "
                                            r"Fetching aborted: Dataset has been downloaded but requested file"), \
            pytest.warns(UserWarning, match="An error occurred while fetching"):  # nilearn's
        build_atlas({"name": "basc", "resolution": 20}, 0, tmp_path / "a", data_dir=tmp_path / "nd",
                    urls=mirror.urls())


def test_a_broken_transfer_is_resumed(mirror, tmp_path, monkeypatch):
    monkeypatch.setattr(http, "BACKOFF_S", 0.01)  # the wait between attempts, not the I/O
    path = MSDL_PATH + "MSDL_rois.zip"  # 96 kB: the half sent before the break spans whole read chunks
    mirror.faults[path] = ["truncate"]
    _, table, img = build({"name": "msdl"}, tmp_path, mirror.urls())
    assert len(table) == 39 and img.shape[3] == 39  # the resumed archive unpacks
    size = (mirror.root / path.lstrip("/")).stat().st_size
    (first, no_range), (second, resumed) = mirror.requests
    assert first == second == path and no_range is None
    assert 0 < int(resumed.removeprefix("bytes=").rstrip("-")) <= size // 2


def test_a_503_is_retried(mirror, tmp_path, monkeypatch):
    monkeypatch.setattr(http, "BACKOFF_S", 0.01)
    path = PCP_PATH + "CC200.nii.gz"
    mirror.faults[path] = ["503", "503"]
    _, table, _ = build({"name": "pcp"}, tmp_path, mirror.urls())
    assert len(table) == 200  # and the md5 matched
    assert mirror.requests == [(path, None)] * 3


def test_retries_end_with_one_error_naming_the_attempts(mirror, tmp_path, monkeypatch):
    monkeypatch.setattr(http, "BACKOFF_S", 0.01)
    mirror.faults[SCHAEFER_PATH + "Schaefer2018_100Parcels_7Networks_order.txt"] = ["503"] * 3
    with pytest.raises(DownloadError, match=r"atlas 'schaefer': cannot download http://127.0.0.1:\d+/ThomasYeoLab/"
                                            r"\S+/Schaefer2018_100Parcels_7Networks_order.txt "
                                            r"\(after 3 attempts\): HTTP 503"):
        build_atlas({"name": "schaefer", "n_rois": 100}, 0, tmp_path / "a", data_dir=tmp_path / "nd",
                    urls=mirror.urls())
