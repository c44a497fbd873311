"""brainage.extract.nifti: streamed frames @ sparse weights equal nibabel's full read, on real NIfTI files."""

from __future__ import annotations

import gzip
import threading

import nibabel as nib
import numpy as np
import pytest
from scipy import sparse

from brainage.errors import InputDataError
from brainage.extract import nifti

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def reference(path, weights) -> np.ndarray:
    """The definition: nibabel's scaled values, frames flattened in Fortran order, times the weights."""
    data = np.asanyarray(nib.load(path).dataobj)
    return data.reshape(-1, data.shape[3], order="F").T.astype(np.float64) @ weights


def random_weights(n_voxels: int, n_columns: int, seed: int = 0, fmt: str = "csc"):
    """Sparse weights with empty rows (voxels never read) and one all-zero column."""
    w = sparse.random_array((n_voxels, n_columns), density=0.3, format="csr", rng=np.random.default_rng(seed))
    return sparse.csr_array(w.multiply(np.arange(n_voxels)[:, None] % 3 != 0)).asformat(fmt)


def save(img: nib.Nifti1Image, tmp_path, name: str):
    path = tmp_path / name
    nib.save(img, path)
    return path


def float_image(shape, dtype=np.float32, seed=0) -> nib.Nifti1Image:
    data = np.random.default_rng(seed).normal(1000.0, 50.0, shape).astype(dtype)
    return nib.Nifti1Image(data, AFFINE)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("fmt", ["csc", "csr"])
def test_float32_odd_shape_equals_nibabel(tmp_path, suffix, fmt):
    path = save(float_image((5, 7, 3, 11)), tmp_path, "bold" + suffix)
    weights = random_weights(5 * 7 * 3, 4, fmt=fmt)
    out = nifti.reduce_bold(path, weights)
    assert out.shape == (11, 4) and out.dtype == np.float64
    np.testing.assert_allclose(out, reference(path, weights), rtol=1e-13, atol=0)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_int16_with_slope_and_intercept(tmp_path, suffix):
    # Float data stored as int16: nibabel picks scl_slope and scl_inter to fit the range.
    data = np.random.default_rng(1).uniform(-3000.0, 9000.0, (6, 4, 5, 7))
    img = nib.Nifti1Image(data, AFFINE, dtype=np.int16)
    path = save(img, tmp_path, "bold" + suffix)
    proxy = nib.load(path).dataobj  # nibabel moves scl_slope/scl_inter from the header to the proxy
    assert proxy.get_unscaled().dtype == np.int16 and proxy.slope != 1.0 and proxy.inter != 0.0
    weights = random_weights(6 * 4 * 5, 3, seed=2)
    np.testing.assert_allclose(nifti.reduce_bold(path, weights), reference(path, weights), rtol=1e-13)


def test_uint8_big_endian_and_one_frame(tmp_path):
    data = np.random.default_rng(3).integers(0, 255, (4, 3, 2, 1), dtype=np.uint8)
    uint8 = save(nib.Nifti1Image(data, AFFINE), tmp_path, "u8.nii.gz")
    big = nib.Nifti1Image(float_image((4, 3, 2, 3)).get_fdata(dtype=np.float32), AFFINE,
                          header=nib.Nifti1Header(endianness=">"))
    big_path = save(big, tmp_path, "big.nii.gz")
    assert nib.load(big_path).get_data_dtype().byteorder == ">"
    weights = random_weights(24, 5, seed=4)
    for path in (uint8, big_path):
        np.testing.assert_allclose(nifti.reduce_bold(path, weights), reference(path, weights), rtol=1e-13)


def test_many_blocks_and_nan_outside_the_weights(tmp_path, monkeypatch):
    # Blocks of 3 frames over 11 frames (a partial last block); a NaN voxel without weights is never read.
    img = float_image((4, 4, 4, 11))
    data = np.asanyarray(img.dataobj)
    data[0, 0, 0, :] = np.nan  # voxel 0 in Fortran order
    path = save(nib.Nifti1Image(data, AFFINE), tmp_path, "bold.nii.gz")
    weights = sparse.csr_array(random_weights(64, 6).toarray() * (np.arange(64) != 0)[:, None])
    monkeypatch.setattr(nifti, "BLOCK_BYTES", 3 * 64 * 4)
    out = nifti.reduce_bold(path, weights)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, reference(path, weights), rtol=1e-13)


def test_multi_member_gzip_and_large_data_offset(tmp_path):
    img = float_image((5, 4, 3, 6))
    img.header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"x" * 500))
    plain = save(img, tmp_path, "bold.nii")
    assert nib.load(plain).dataobj.offset > 352
    raw = plain.read_bytes()
    cuts = [0, 100, 1000, len(raw) // 2, len(raw)]
    multi = tmp_path / "multi.nii.gz"
    multi.write_bytes(b"".join(gzip.compress(raw[a:b]) for a, b in zip(cuts[:-1], cuts[1:])))
    weights = random_weights(60, 3, seed=5)
    expected = reference(plain, weights)
    np.testing.assert_allclose(nifti.reduce_bold(multi, weights), expected, rtol=1e-13)
    np.testing.assert_allclose(reference(multi, weights), expected, rtol=1e-13)


def test_read_header_reads_no_data(tmp_path):
    path = save(float_image((5, 4, 3, 6)), tmp_path, "bold.nii.gz")
    img = nifti.read_header(path)
    assert img.shape == (5, 4, 3, 6) and not img.in_memory
    np.testing.assert_array_equal(img.affine, AFFINE)


def test_truncated_gzip_is_input_data_error(tmp_path):
    path = save(float_image((6, 6, 6, 8)), tmp_path, "bold.nii.gz")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    threads = threading.active_count()
    with pytest.raises(InputDataError, match=r"bold\.nii\.gz: truncated or corrupt"):
        nifti.reduce_bold(path, random_weights(216, 2))
    assert threading.active_count() == threads  # the reader thread has ended


def test_corrupt_gzip_is_input_data_error(tmp_path):
    path = save(float_image((6, 6, 6, 8)), tmp_path, "bold.nii.gz")
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2: len(raw) // 2 + 64] = bytes(64)
    path.write_bytes(bytes(raw))
    with pytest.raises(InputDataError, match=r"bold\.nii\.gz: truncated or corrupt gzip data"):
        nifti.reduce_bold(path, random_weights(216, 2))


def test_truncated_nii_is_input_data_error(tmp_path):
    path = save(float_image((6, 6, 6, 8)), tmp_path, "bold.nii")
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(InputDataError, match=r"bold\.nii: truncated or corrupt: the data ends 100 bytes short"):
        nifti.reduce_bold(path, random_weights(216, 2))


def test_truncated_header_and_not_nifti(tmp_path):
    short = tmp_path / "short.nii.gz"
    short.write_bytes(gzip.compress(b"\0" * 100))
    text = tmp_path / "notes.nii"
    text.write_text("not an image")
    for path in (short, text):
        with pytest.raises(InputDataError, match=rf"{path.name}: not a readable NIfTI image"):
            nifti.reduce_bold(path, random_weights(10, 1))


def test_not_4d_is_input_data_error(tmp_path):
    path = save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), AFFINE), tmp_path, "mask.nii.gz")
    with pytest.raises(InputDataError, match=r"mask\.nii\.gz: expected a 4D image .* found shape \(4, 4, 4\)"):
        nifti.reduce_bold(path, random_weights(64, 1))


def test_weights_must_cover_the_grid(tmp_path):
    path = save(float_image((4, 4, 4, 2)), tmp_path, "bold.nii.gz")
    message = r"one row per voxel .* \(\(4, 4, 4\) = 64 voxels\), found csc_array of shape \(60, 1\)"
    with pytest.raises(ValueError, match=message):
        nifti.reduce_bold(path, random_weights(60, 1))
    with pytest.raises(ValueError, match="2D sparse array"):
        nifti.reduce_bold(path, np.ones((64, 1)))
