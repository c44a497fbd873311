"""Tests for brainage.extract.volumes: the block-averaging operator, coarse mask rule, affine, factor, scaling."""

import numpy as np
import pytest
from extract_fixtures import extract_params, make_subject, outputs

from brainage import storage
from brainage.errors import ConfigError
from brainage.extract.subject import extract_subject
from brainage.extract.clean import clean_signals
from brainage.extract.confounds import select_confounds
from brainage.extract.params import ExtractParams
from brainage.extract.volumes import block_operator, block_ratio, coarse_affine, scale_frames


def block_average(cleaned, brain, affine, factor):
    """Apply the block operator to in-mask voxels given in C order (as ``data[brain]``)."""
    weights, mask, coarse = block_operator(brain, affine, factor)
    full = np.zeros(brain.shape + (cleaned.shape[0],))
    full[brain] = cleaned.T
    return full.reshape(-1, cleaned.shape[0], order="F").T @ weights, mask, coarse


def test_block_average_hand_computed():
    # Grid (4, 2, 2), factor 2 -> coarse (2, 1, 1). Block 0 (x = 0, 1) has 5 of 8 voxels in
    # the mask (62.5 % -> kept); block 1 (x = 2, 3) has 3 of 8 (37.5 % -> dropped).
    brain = np.zeros((4, 2, 2), bool)
    brain[0] = True  # 4 voxels
    brain[1, 0, 0] = True  # 5th voxel of block 0
    brain[2, 0, 0] = brain[3, 0, 0] = brain[3, 1, 1] = True
    n_vox = int(brain.sum())
    cleaned = np.arange(2 * n_vox, dtype=float).reshape(2, n_vox)  # C-order in-mask voxels
    frames, mask, _ = block_average(cleaned, brain, np.eye(4), 2)
    np.testing.assert_array_equal(mask, [[[True]], [[False]]])
    # Block 0 = in-mask voxels 0..4 (x=0: 4 voxels, then (1,0,0)): means (0+1+2+3+4)/5 = 2, +8 = 10.
    np.testing.assert_allclose(frames, [[2.0], [10.0]])


def test_block_average_pads_partial_blocks():
    # Grid (3, 2, 2): the last block is half padding. With all 4 real voxels in the mask it
    # holds exactly 50 % -> kept, averaged over those 4 only.
    brain = np.ones((3, 2, 2), bool)
    cleaned = np.arange(12, dtype=float)[None, :]
    frames, mask, _ = block_average(cleaned, brain, np.eye(4), 2)
    assert mask.shape == (2, 1, 1) and mask.all()
    np.testing.assert_allclose(frames, [[np.mean(np.arange(8)), np.mean(np.arange(8, 12))]])
    brain[2, 1, 1] = False  # 3 of 8 -> dropped
    frames, mask, _ = block_average(cleaned[:, :11], brain, np.eye(4), 2)
    np.testing.assert_array_equal(mask.ravel(), [True, False])
    assert frames.shape == (1, 1)


def test_coarse_affine_centres_blocks():
    affine = np.array([[2.0, 0, 0, -10], [0, 2, 0, -20], [0, 0, 2, -30], [0, 0, 0, 1]])
    out = coarse_affine(affine, 2)
    np.testing.assert_allclose(out[:3, :3], np.diag([4.0, 4, 4]))
    np.testing.assert_allclose(out[:3, 3], [-9.0, -19.0, -29.0])  # centre of fine voxels 0 and 1
    flipped = np.diag([-3.0, 3, 3, 1])
    flipped[:3, 3] = [93, -129, -72]  # the PCP 3 mm atlas orientation (x flipped)
    np.testing.assert_allclose(coarse_affine(flipped, 3)[:3, 3], [90.0, -126.0, -69.0])


@pytest.mark.parametrize(("voxel", "target", "ratio"), [
    ((4.0, 4, 4), 8, [2, 2, 2]), ((2.0, 2, 2), 8, [4, 4, 4]), ((3, 3, 3), 3, [1, 1, 1]),
    ((3.0, 3, 3), 4, [4 / 3] * 3), ((2.0, 2, 2.5), 5, [2.5, 2.5, 2]), ((1.9999, 2, 2), 4, [2, 2, 2]),
])
def test_block_ratio(voxel, target, ratio):
    np.testing.assert_allclose(block_ratio(np.diag([*voxel, 1.0]), target), ratio)


def test_block_ratio_refuses_upsampling():
    with pytest.raises(ConfigError, match=r"extract.volume_voxel_size=2 mm is finer than the BOLD voxels "
                       r"\(4.0, 4.0, 4.0\) mm; the volumes are downsampled, never upsampled"):
        block_ratio(np.diag([4.0, 4, 4, 1]), 2)


def test_fractional_blocks_hand_computed():
    # 3 mm voxels in x, 4 mm target: ratio 4/3. Fine centres 0.5, 1.5, 2.5, 3.5 (voxel units)
    # fall in coarse cells [0, 4/3), [4/3, 8/3), [8/3, 4) -> blocks 0, 1, 1, 2; each needs
    # 0.5 x 4/3 of a voxel in the mask, so all three are kept.
    brain = np.ones((4, 1, 1), bool)
    affine = np.diag([3.0, 4, 4, 1])
    cleaned = np.array([[1.0, 2.0, 4.0, 8.0]])
    frames, mask, coarse = block_average(cleaned, brain, affine, block_ratio(affine, 4))
    assert mask.shape == (3, 1, 1) and mask.all()
    np.testing.assert_allclose(frames, [[1.0, 3.0, 8.0]])
    np.testing.assert_allclose(coarse[:3, :3], np.diag([4.0, 4, 4]))
    np.testing.assert_allclose(coarse[:3, 3], [0.5, 0, 0])  # fine x from -1.5 to 2.5 mm: centre 0.5


def test_fractional_blocks_are_judged_against_their_own_size():
    # 3 -> 4 mm in all axes: per axis the blocks hold 1 or 2 voxels (pattern 1, 2, 1 over 4
    # voxels), so a block holds 1 to 8 voxels. A whole brain keeps every block, including the
    # 1-voxel ones (1 < 0.5 x (4/3)^3 = 1.19 would drop them: a lattice of holes in the brain).
    affine = np.diag([3.0, 3, 3, 1])
    ratio = block_ratio(affine, 4)
    _, mask, _ = block_operator(np.ones((12, 12, 12), bool), affine, ratio)
    assert mask.shape == (9, 9, 9) and mask.all()
    # Half of a 2x2x2 block (4 of 8 voxels) is kept, 3 of 8 is not.
    brain = np.zeros((4, 4, 4), bool)
    brain[1, 1:3, 1:3] = True  # block (1, 1, 1) holds fine voxels 1..2 on every axis
    assert block_operator(brain, affine, ratio)[1][1, 1, 1]
    brain[1, 1, 1] = False
    assert not block_operator(brain, affine, ratio)[1][1, 1, 1]


def test_voxel_scaling_is_zscore_with_sample_sd_and_constant_voxels_zero():
    frames = np.array([[1.0, 7.0], [2.0, 7.0], [3.0, 7.0], [6.0, 7.0]])
    z = scale_frames(frames, "voxel", 2.0)
    assert z.dtype == np.float32
    expected = (frames[:, 0] - 3.0) / np.std(frames[:, 0], ddof=1)
    np.testing.assert_allclose(z[:, 0], expected, rtol=1e-6)
    np.testing.assert_array_equal(z[:, 1], 0.0)


def test_global_scaling_keeps_the_amplitude_pattern_and_drops_the_scale():
    # Voxel 0 fluctuates twice as much as voxel 1; the subject's overall scale is arbitrary.
    t = np.arange(8.0)
    frames = 100.0 + np.column_stack([2 * np.sin(t), np.sin(t)])
    a = scale_frames(frames, "global", 2.0)
    b = scale_frames(5.0 * frames + 3.0, "global", 2.0)
    np.testing.assert_allclose(a, b, rtol=1e-5)
    np.testing.assert_allclose(a[:, 0], 2 * a[:, 1], rtol=1e-5)
    np.testing.assert_allclose(a.mean(axis=0), 0.0, atol=1e-6)
    centred = frames - frames.mean(axis=0)
    np.testing.assert_allclose(a, centred / centred.std(ddof=1), rtol=1e-5)
    with pytest.raises(ConfigError, match="extract.volume_scaling must be 'global' or 'voxel', found 'robust'"):
        scale_frames(frames, "robust", 2.0)


def test_stored_volumes_match_loop_reference(tmp_path):
    subject = make_subject(tmp_path, n=60, shape=(7, 8, 8))
    params = extract_params(volume_voxel_size=8, min_frames=20)
    out = outputs(tmp_path)
    qc = extract_subject("sub-01", subject.bold, subject.mask, [subject.atlas_dir], params, **out)
    vols = storage.read_volumes(out["volumes_out"])

    # Reference: clean the in-mask voxels, then a plain loop over 2x2x2 blocks.
    cfg = ExtractParams.from_dict(params)
    brain, data = subject.truth["brain"], subject.truth["data"]
    conf, sample_mask = select_confounds(subject.bold, subject.confounds, cfg)
    grid = np.zeros((len(sample_mask) if sample_mask is not None else 60, 8, 8, 8))
    grid[:, :7][:, brain] = clean_signals(data[brain].T, conf, sample_mask, 2.0, cfg)
    inside = np.zeros((8, 8, 8), bool)
    inside[:7] = brain
    ref_mask = np.zeros((4, 4, 4), bool)
    ref_frames = []
    for i, j, k in np.ndindex(4, 4, 4):
        block = (slice(2 * i, 2 * i + 2), slice(2 * j, 2 * j + 2), slice(2 * k, 2 * k + 2))
        if inside[block].sum() >= 4:
            ref_mask[i, j, k] = True
            ref_frames.append(grid[(slice(None), *block)][:, inside[block]].mean(axis=1))
    ref = np.stack(ref_frames, axis=1)
    ref = ref - ref.mean(axis=0)
    ref = ref / ref.std(ddof=1)  # extract.volume_scaling: global

    np.testing.assert_array_equal(vols.mask, ref_mask)
    assert qc["volume_shape"] == [4, 4, 4] and qc["n_volume_voxels"] == int(ref_mask.sum())
    assert vols.data.dtype == np.float16 and vols.data.shape == (qc["n_frames_kept"], ref_mask.sum())
    np.testing.assert_allclose(vols.data.astype(float), ref, atol=5e-3)  # float16 storage
    np.testing.assert_allclose(vols.affine, coarse_affine(subject.truth["affine"], 2))
