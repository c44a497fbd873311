"""The embedded synthetic demo cohort (fMRIPrep-format BOLD, masks and confounds with a planted age effect).

Importing this package stays light (no numpy): Snakemake imports it while it builds the DAG,
only to list the demo subjects. The generator lives in :mod:`brainage.demo.generate`.
"""

from __future__ import annotations

__all__ = ["bold_res", "generate_demo", "subject_ids"]


def bold_res(config: dict) -> str | None:
    """The ``res-`` label of the BOLD files the workflow reads (the file names and the methods text).

    Parameters
    ----------
    config : dict
        The resolved workflow config (``inputs``, ``demo``).

    Returns
    -------
    str or None
        The demo writes its files at ``demo.voxel_size`` (``res-4`` at 4 mm); every other
        source reads ``inputs.res`` (None: no res- required).
    """
    if config["inputs"]["source"] == "demo":
        return str(config["demo"]["voxel_size"])
    res = config["inputs"].get("res")
    return None if res is None else str(res)


def subject_ids(n_subjects: int) -> list[str]:
    """BIDS subject labels of the demo cohort, without the ``sub-`` prefix.

    Parameters
    ----------
    n_subjects : int
        Number of subjects (``demo.n_subjects``), at least 1.

    Returns
    -------
    list of str
        ``["001", "002", ...]``: zero-padded to 3 digits (more digits beyond 999 subjects).

    Raises
    ------
    ValueError
        If ``n_subjects`` is not a positive integer.
    """
    if isinstance(n_subjects, bool) or not isinstance(n_subjects, int) or n_subjects < 1:
        raise ValueError(f"demo.n_subjects must be a positive integer, found {n_subjects!r}")
    return [f"{i:03d}" for i in range(1, n_subjects + 1)]


def __getattr__(name: str):
    # Lazy re-export: the generator pulls in numpy, nibabel and nilearn, which the DAG build
    # (``subject_ids`` only) must not pay for.
    if name == "generate_demo":
        from brainage.demo.generate import generate_demo

        return generate_demo
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
