"""BIDS-Derivatives files other tools read: ROI series and relationship matrices as TSV, NIfTI images.

Formats as XCP-D writes them (``xcp_d/interfaces/connectivity.py``, 0.7 to 26.1): a time-series TSV
has the region names as its header row and one row per frame, no index column; a relationship
matrix (``_relmat.tsv``) is square, with the header ``Node`` then the region names and each row
starting with its region's name, so ``pandas.read_csv(path, sep="\\t", index_col=0)`` gives the
matrix with the names on both axes. Missing values are ``n/a``.

Not re-exported by :mod:`brainage.storage`: every stage imports that package, and its code hash
(``brainage._codehash``) would change with it, rerunning the whole workflow for a format only the
export stage writes.
"""

from __future__ import annotations

import os
import shutil

import nibabel as nib
import numpy as np
import pandas as pd

from brainage.storage._atomic import atomic_path, write_tsv

#: The header of a relationship matrix's first column (the region names), as XCP-D writes it.
RELMAT_INDEX_LABEL = "Node"


def write_timeseries_tsv(path: str | os.PathLike, data: np.ndarray, labels: list[str]) -> None:
    """Write ROI series as a BIDS time-series TSV, atomically.

    Parameters
    ----------
    path : path-like
        ``..._stat-mean_timeseries.tsv``.
    data : ndarray, shape (n_timepoints, n_regions)
        Written with the shortest text that reads back to the same value of its dtype (float32
        series read back as the same float32 numbers); NaN as ``n/a``.
    labels : list of str, length n_regions
        The header row.

    Raises
    ------
    ValueError
        If ``data`` is not 2D with one column per label.
    """
    data = np.asarray(data)
    if data.ndim != 2 or data.shape[1] != len(labels):
        raise ValueError(f"{path}: data shape {data.shape} does not match {len(labels)} region labels")
    write_tsv(path, pd.DataFrame(data, columns=list(labels)))


def write_relmat_tsv(path: str | os.PathLike, matrix: np.ndarray, labels: list[str]) -> None:
    """Write a square relationship matrix as XCP-D's ``_relmat.tsv``, atomically.

    Parameters
    ----------
    path : path-like
        ``..._stat-pearsoncorrelation_relmat.tsv``.
    matrix : ndarray, shape (n_regions, n_regions)
        NaN is written as ``n/a``.
    labels : list of str, length n_regions
        Region names: the header after ``Node``, and the first cell of each row.

    Raises
    ------
    ValueError
        If ``matrix`` is not square with one row per label.
    """
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape != (len(labels), len(labels)):
        raise ValueError(f"{path}: matrix shape {matrix.shape} is not ({len(labels)}, {len(labels)}) "
                         "for its region labels")
    table = pd.DataFrame(matrix, index=list(labels), columns=list(labels))
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", na_rep="n/a", index_label=RELMAT_INDEX_LABEL)


def write_nifti(path: str | os.PathLike, image: nib.Nifti1Image) -> None:
    """Save a NIfTI image atomically (the format and compression follow the name, e.g. ``.nii.gz``)."""
    with atomic_path(path) as tmp:
        nib.save(image, tmp)


def copy_file(source: str | os.PathLike, path: str | os.PathLike) -> None:
    """Copy ``source`` to ``path`` byte for byte, atomically (an atlas image keeps its exact header)."""
    with atomic_path(path) as tmp:
        shutil.copyfile(source, tmp)
