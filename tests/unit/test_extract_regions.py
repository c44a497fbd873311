"""Tests for brainage.extract.regions: labels, maps and spheres operators against nilearn's maskers; coverage."""

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from extract_fixtures import extract_params, make_subject, outputs, write_atlas_dir
from nilearn.maskers import NiftiMapsMasker, NiftiSpheresMasker

from brainage import storage
from brainage.errors import InputDataError
from brainage.extract.subject import extract_subject
from brainage.extract.regions import describe_lost, load_atlas_dir, lost_regions, region_operator

NO_CLEANING = {"denoise": "custom", "custom": {**extract_params()["custom"], "strategy": []}, "scrub": False, "high_pass": None, "low_pass": None, "detrend": False,
               "standardize": False, "min_frames": 10, "min_seconds": 0}


def _reduce(subject, operator):
    """Raw signals of the operator's regions (frames x regions), straight from the fixture's data."""
    data = subject.truth["data"].astype(np.float64)
    return data.reshape(-1, data.shape[3], order="F").T @ operator.weights


def _maps(subject, folder):
    # Three overlapping Gaussian blobs on the fixture's 8 x 8 x 8, 4 mm grid.
    ijk = np.indices((8, 8, 8)).transpose(1, 2, 3, 0)
    centres = [(2, 2, 2), (5, 4, 3), (3, 6, 5)]
    maps = np.stack([np.exp(-((ijk - c) ** 2).sum(-1) / 4.0) for c in centres], axis=-1).astype(np.float32)
    image = folder.parent / "maps.nii.gz"
    nib.save(nib.Nifti1Image(maps, subject.truth["affine"]), image)
    return write_atlas_dir(folder, image, pd.DataFrame({"index": [1, 2, 3], "name": ["a", "b", "c"]}), kind="maps")


def test_maps_operator_equals_nilearn_maps_masker(tmp_path):
    subject = make_subject(tmp_path, n=30)
    atlas = load_atlas_dir(_maps(subject, tmp_path / "blobs"))
    mask = nib.load(subject.mask)
    operator = region_operator(atlas, mask, subject.truth["brain"])
    expected = NiftiMapsMasker(atlas.path / "atlas.nii.gz", mask_img=mask, dtype="float64", reports=False,
                               standardize=None).fit_transform(str(subject.bold))
    np.testing.assert_allclose(_reduce(subject, operator), expected, rtol=1e-6)
    assert operator.coverage.shape == (3,) and np.all((operator.coverage > 0.5) & (operator.coverage <= 1))


def _spheres(folder, seeds, radius):
    labels = pd.DataFrame({"index": range(1, len(seeds) + 1), "name": [f"s{k}" for k in range(len(seeds))]})
    labels[["x", "y", "z"]] = np.asarray(seeds, dtype=float)
    return write_atlas_dir(folder, None, labels, kind="spheres", radius_mm=radius)


def test_spheres_operator_equals_nilearn_spheres_masker(tmp_path):
    # Grid: 4 mm voxels, voxel 0 at -16 mm; mask = voxels 1..6 (-12..8 mm). Two seeds inside, one
    # between voxels whose sphere crosses the mask edge at y = 8 mm.
    subject = make_subject(tmp_path, n=30)
    seeds = [(-4.0, -4.0, -4.0), (6.0, 2.0, 0.0), (1.0, 9.0, -7.0)]
    atlas = load_atlas_dir(_spheres(tmp_path / "spheres", seeds, 6.0))
    mask = nib.load(subject.mask)
    operator = region_operator(atlas, mask, subject.truth["brain"])
    expected = NiftiSpheresMasker(seeds, radius=6.0, mask_img=mask, dtype="float64", reports=False,
                                  standardize=None).fit_transform(str(subject.bold))
    np.testing.assert_allclose(_reduce(subject, operator), expected, rtol=1e-6)
    np.testing.assert_allclose(operator.coverage[:2], 1.0)
    assert 0.5 < operator.coverage[2] < 1


def test_sphere_at_the_mask_edge_has_partial_coverage(tmp_path):
    # Seed at voxel (1, 4, 4) (x = -12 mm), radius 4 mm: the voxel and its 6 neighbours, one of
    # which (x voxel 0) lies outside the mask -> 6 of 7.
    subject = make_subject(tmp_path, n=30)
    atlas = load_atlas_dir(_spheres(tmp_path / "edge", [(-12.0, 0.0, 0.0)], 4.0))
    operator = region_operator(atlas, nib.load(subject.mask), subject.truth["brain"])
    assert operator.coverage == pytest.approx([6 / 7])


def test_labels_coverage_and_a_region_that_vanishes_on_resampling(tmp_path):
    # A 1 mm atlas: region 1 is one voxel, between the 4 mm BOLD voxel centres -> it vanishes;
    # region 2 is a 12 mm cube centred in the mask (all inside); region 3 straddles the mask edge.
    subject = make_subject(tmp_path, n=30)
    affine = np.diag([1.0, 1, 1, 1])
    affine[:3, 3] = -16.0
    labels = np.zeros((32, 32, 32), np.int16)
    labels[1, 1, 1] = 1  # -15 mm: between the 4 mm voxel centres -16 and -12, nearest to none of them
    labels[10:22, 10:22, 10:22] = 2
    labels[0:8, 14:18, 14:18] = 3  # x from -16 to -9 mm: BOLD voxels 0 (out of the mask) and 1 (in)
    image = tmp_path / "fine.nii.gz"
    nib.save(nib.Nifti1Image(labels, affine), image)
    folder = write_atlas_dir(tmp_path / "fine", image, pd.DataFrame({"index": [1, 2, 3], "name": ["dot", "cube", "edge"]}))
    operator = region_operator(load_atlas_dir(folder), nib.load(subject.mask), subject.truth["brain"])
    # Nearest neighbour: each 4 mm voxel takes the label at its centre. cube: BOLD voxels 3..5 per axis
    # (centres -4, 0, 4 mm) -> 27 x 64 mm^3 = 1728 = 12^3 mm^3. edge: voxel centres -16 and -12 mm
    # in x, -4 and 0 in y and z... of which only x = -12 mm lies in the mask.
    assert operator.on_grid.tolist() == [False, True, True]
    assert operator.coverage[0] == 0 and operator.coverage[1] == pytest.approx(1.0)
    lost = lost_regions(operator, 0.5)
    assert lost["name"].tolist() == ["dot", "edge"]
    assert describe_lost(lost, 4.0) == (
        "not on the 4 mm BOLD grid (outside its field of view, or smaller than its voxels): dot; "
        f"partly outside the brain mask: edge ({100 * operator.coverage[2]:.0f}%)")


def test_lost_region_excludes_the_run_or_warns(tmp_path, caplog):
    # The fixture's octants lie 27/64 = 42 % inside the mask; roi_009 has no voxel.
    subject = make_subject(tmp_path, n=60)
    out = outputs(tmp_path)
    qc = extract_subject("sub-01", subject.bold, subject.mask, [subject.atlas_dir],
                         extract_params(on_region_loss="exclude", min_region_coverage=0.5), **out)
    assert qc["status"] == "excluded"
    assert qc["reason"] == (
        f"{subject.mask}: regions lost on this brain mask (atlas octants: 9 of 9 regions below 0.5 coverage: "
        "not on the 4 mm BOLD grid (outside its field of view, or smaller than its voxels): roi_009; partly "
        "outside the brain mask: " + ", ".join(f"roi_{k:03d} (42%)" for k in range(1, 9))
        + "); extract.min_region_coverage sets the threshold, extract.on_region_loss: warn keeps such runs")
    qc = extract_subject("sub-01", subject.bold, subject.mask, [subject.atlas_dir],
                         extract_params(on_region_loss="warn", min_region_coverage=0.5), **out)
    assert qc["status"] == "included" and qc["atlases"]["octants"]["lost_regions"] == [f"roi_{k:03d}" for k in range(1, 10)]
    assert "(kept: extract.on_region_loss is warn)" in caplog.text


def test_several_atlases_in_one_pass(tmp_path):
    subject = make_subject(tmp_path, n=60)
    blobs = _maps(subject, tmp_path / "blobs")
    spheres = _spheres(tmp_path / "spheres", [(-4.0, -4.0, -4.0), (6.0, 2.0, 0.0)], 6.0)
    out = outputs(tmp_path)
    out["series_out"] = [tmp_path / f"out/{name}.parquet" for name in ("octants", "blobs", "spheres")]
    params = extract_params(**NO_CLEANING)
    qc = extract_subject("sub-01", subject.bold, subject.mask, [subject.atlas_dir, blobs, spheres], params, **out)
    assert qc["status"] == "included" and list(qc["atlases"]) == ["octants", "blobs", "spheres"]
    mask = nib.load(subject.mask)
    for path, folder in zip(out["series_out"], [subject.atlas_dir, blobs, spheres], strict=True):
        series = storage.read_timeseries(path)
        operator = region_operator(load_atlas_dir(folder), mask, subject.truth["brain"])
        np.testing.assert_allclose(series.data, _reduce(subject, operator), rtol=1e-5)  # float32 storage
        assert series.metadata["atlas"] == folder.name
        assert series.metadata["region_coverage"] == [round(c, 4) for c in operator.coverage.tolist()]


@pytest.mark.parametrize(("edit", "match"), [
    (lambda f: (f / "atlas.json").write_text('{"kind": "blob"}'), r"atlas.json: 'kind' must be one of labels, maps"),
    (lambda f: (f / "atlas.nii.gz").unlink(), r"atlas.nii.gz: cannot read the atlas image"),
])
def test_bad_atlas_folder_fails_the_job(tmp_path, edit, match):
    subject = make_subject(tmp_path, n=30)
    edit(subject.atlas_dir)
    with pytest.raises(InputDataError, match=match):
        load_atlas_dir(subject.atlas_dir)
