"""Tests for brainage.extract.inputs: sidecar, BOLD, mask, atlas, label table, confounds lookup."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from extract_fixtures import extract_params, make_subject, outputs, rewrite_bold, write_atlas_dir

from brainage.errors import InputDataError
from brainage.extract.subject import extract_subject
from brainage.extract.inputs import (
    atlas_on_grid,
    check_confounds_file,
    find_confounds_file,
    header_repetition_time,
    load_atlas,
    load_mask,
    read_atlas_labels,
    read_repetition_time,
    sidecar_path,
)


@pytest.fixture
def subject(tmp_path):
    return make_subject(tmp_path, n=40)


def test_repetition_time_from_sidecar(subject):
    assert sidecar_path(subject.bold).name.endswith("_desc-preproc_bold.json")
    assert read_repetition_time(subject.bold) == 2.0


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, r"_bold.json: BOLD sidecar not found \(needed for RepetitionTime\)"),
        ('{"TaskName": "rest"}', r"_bold.json: expected a positive number under 'RepetitionTime', found None"),
        ('{"RepetitionTime": "2"}', r"_bold.json: expected a positive number .* found '2'"),
        ("{not json", r"_bold.json: not valid JSON"),
        (b'{"RepetitionTime": 2.0, "Note": "\xff"}', r"_bold.json: not valid JSON \(.*codec can't decode"),
    ],
)
def test_repetition_time_errors(subject, content, match):
    sidecar = sidecar_path(subject.bold)
    if content is None:
        sidecar.unlink()
    elif isinstance(content, bytes):
        sidecar.write_bytes(content)
    else:
        sidecar.write_text(content)
    with pytest.raises(InputDataError, match=match):
        read_repetition_time(subject.bold)


def test_mask_must_match_bold_grid(subject, tmp_path):
    img = nib.load(subject.bold)
    shifted = tmp_path / "mask_shifted.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.uint8), np.diag([4.0, 4, 4, 1])), shifted)
    with pytest.raises(InputDataError, match=r"mask_shifted.nii.gz: expected a 3D mask on the BOLD grid"):
        load_mask(shifted, img)
    empty = tmp_path / "mask_empty.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.uint8), img.affine), empty)
    with pytest.raises(InputDataError, match=r"mask_empty.nii.gz: brain mask has no voxel"):
        load_mask(empty, img)


def _gzip_cut(path, data, keep):
    """Write ``data`` as a NIfTI .nii.gz at ``path``, then keep only ``keep`` of its compressed bytes."""
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    compressed = path.read_bytes()
    path.write_bytes(compressed[:int(len(compressed) * keep)])


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        pytest.param(lambda p: p.write_bytes(b""), r"mask.nii.gz: not a readable NIfTI image: missing, truncated "
                     r"or corrupt \(Empty file", id="zero bytes"),
        pytest.param(lambda p: p.write_bytes(b"not an image"), r"mask.nii.gz: not a readable NIfTI image",
                     id="garbage"),
        pytest.param(lambda p: p.unlink(), r"mask.nii.gz: not a readable NIfTI image: missing", id="missing"),
        pytest.param(lambda p: p.write_bytes(p.read_bytes()[:40]), r"mask.nii.gz: not a readable NIfTI image",
                     id="cut inside the header"),
    ],
)
def test_unreadable_mask_is_input_data_error(subject, tmp_path, damage, match):
    mask = tmp_path / "mask.nii.gz"
    mask.write_bytes(subject.mask.read_bytes())
    damage(mask)
    with pytest.raises(InputDataError, match=match):
        load_mask(mask, nib.load(subject.bold))


def test_mask_truncated_after_its_header_names_the_file(tmp_path):
    # A mask large and noisy enough that its header decodes and the gzip stream ends inside
    # the data: nibabel then raises EOFError, without the path, when the array is read.
    mask = tmp_path / "mask.nii.gz"
    data = (np.random.default_rng(0).random((40, 40, 40)) > 0.5).astype(np.uint8)
    _gzip_cut(mask, data, 0.5)
    bold_img = nib.Nifti1Image(np.zeros((40, 40, 40, 2), np.float32), np.eye(4))
    with pytest.raises(InputDataError, match=r"mask.nii.gz: truncated or corrupt image data \(EOFError: "
                                             r"Compressed file ended"):
        load_mask(mask, bold_img)


def test_header_tr_of_an_unreadable_bold_is_input_data_error(tmp_path):
    bold = tmp_path / "sub-01_func_preproc.nii.gz"
    bold.write_bytes(b"")
    with pytest.raises(InputDataError, match=r"sub-01_func_preproc.nii.gz: not a readable NIfTI image"):
        header_repetition_time(bold)


def test_unreadable_sidecar_is_input_data_error(subject, monkeypatch):
    sidecar = sidecar_path(subject.bold)
    real_read_text = type(sidecar).read_text

    def denied(self, *args, **kwargs):
        if self == sidecar:
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(type(sidecar), "read_text", denied)
    with pytest.raises(InputDataError, match=r"_bold.json: BOLD sidecar cannot be read \(.*Permission denied"):
        read_repetition_time(subject.bold)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("value\tname\n1\troi_001\n", r"labels.tsv: expected columns 'index' and 'name', missing \['index'\]"),
        ("index\tname\n1\troi_001\n1\troi_002\n", r"labels.tsv: expected unique positive integer 'index'"),
        ("index\tname\n1\troi_001\n2.5\troi_002\n", r"labels.tsv: expected unique positive integer"),
        ("index\tname\n1\troi_001\n2\troi_001\n", r"labels.tsv: .*1 repeated names"),
    ],
)
def test_atlas_label_table_errors(tmp_path, text, match):
    path = tmp_path / "labels.tsv"
    path.write_text(text)
    with pytest.raises(InputDataError, match=match):
        read_atlas_labels(path)


def test_atlas_label_table(subject):
    table = read_atlas_labels(subject.atlas_labels)
    assert table["index"].tolist() == list(range(1, 10))
    assert table["name"].iloc[0] == "roi_001"


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (np.ones((4, 4, 4, 2)), r"bad_atlas.nii.gz: expected a 3D label image, found shape \(4, 4, 4, 2\)"),
        (np.full((4, 4, 4), 1.5), r"bad_atlas.nii.gz: expected non-negative integer labels"),
        (np.full((4, 4, 4), -1.0), r"bad_atlas.nii.gz: expected non-negative integer labels"),
    ],
)
def test_atlas_image_errors(tmp_path, data, match):
    path = tmp_path / "bad_atlas.nii.gz"
    nib.save(nib.Nifti1Image(data.astype(np.float32), np.eye(4)), path)
    with pytest.raises(InputDataError, match=match):
        load_atlas(path)


def test_confounds_lookup(subject, tmp_path):
    assert find_confounds_file(subject.bold) == subject.confounds
    assert check_confounds_file(subject.bold, subject.confounds) == subject.confounds
    other = tmp_path / "elsewhere_desc-confounds_timeseries.tsv"
    other.write_text("a\n1\n")
    with pytest.raises(ValueError, match=r"--confounds .*elsewhere.* is not the file nilearn load_confounds reads"):
        check_confounds_file(subject.bold, other)
    # fMRIPrep < 20.2 name beside the new one: nilearn would refuse to choose.
    old = subject.confounds.with_name("sub-01_task-rest_desc-confounds_regressors.tsv")
    old.write_text("a\n1\n")
    with pytest.raises(InputDataError, match=r"expected one fMRIPrep confounds file beside it.*regressors"):
        find_confounds_file(subject.bold)
    old.unlink()
    subject.confounds.unlink()
    with pytest.raises(InputDataError, match=r"desc-preproc_bold.nii.gz: expected one fMRIPrep confounds file.*found \[\]"):
        find_confounds_file(subject.bold)


def _cc200_subject(tmp_path, shared_data):
    # 2 mm grid whose voxel centres never fall half-way between 3 mm atlas voxels, so
    # nearest-neighbour has a single answer to compare against.
    subject = make_subject(tmp_path, n=40, shape=(10, 10, 10), voxel_size=2.0, origin=(-10.4, -20.4, 10.4))
    labels = tmp_path / "atlas" / "cc200.tsv"
    labels.write_text("index\tname\n" + "".join(f"{i}\troi_{i:03d}\n" for i in range(1, 201)))
    return subject, shared_data / "abide_pcp_atlases" / "CC200.nii.gz", labels


def test_cc200_3mm_atlas_on_2mm_grid(tmp_path, shared_data):
    subject, cc200, _ = _cc200_subject(tmp_path, shared_data)
    atlas_img = load_atlas(cc200)
    on_grid = atlas_on_grid(atlas_img, nib.load(subject.mask))
    # Independent nearest neighbour: world coordinates of our voxels -> atlas voxel, rounded.
    ijk = np.indices((10, 10, 10)).reshape(3, -1)
    world = subject.truth["affine"][:3, :3] @ ijk + subject.truth["affine"][:3, 3:]
    inv = np.linalg.inv(atlas_img.affine)
    atlas_ijk = np.rint(inv[:3, :3] @ world + inv[:3, 3:]).astype(int)
    expected = np.asarray(atlas_img.dataobj)[tuple(atlas_ijk)].reshape(10, 10, 10)
    np.testing.assert_array_equal(on_grid, expected)


def test_cc200_missing_regions_reported(tmp_path, shared_data):
    subject, cc200, labels = _cc200_subject(tmp_path, shared_data)
    out = outputs(tmp_path)
    folder = write_atlas_dir(tmp_path / "cc200", cc200, pd.read_csv(labels, sep="\t"))
    qc = extract_subject("sub-01", subject.bold, subject.mask, [folder], extract_params(volume_voxel_size=4,
                         min_frames=10, min_seconds=60), **out)
    on_grid = atlas_on_grid(load_atlas(cc200), nib.load(subject.mask))
    present = set(np.unique(on_grid[subject.truth["brain"]]).tolist()) - {0}
    assert 0 < len(present) < 200
    assert qc["status"] == "included" and qc["n_regions"] == 200
    assert qc["missing_regions"] == [f"roi_{i:03d}" for i in range(1, 201) if i not in present]
    written = json.loads(out["qc_out"].read_text())
    assert written["missing_regions"] == qc["missing_regions"]
