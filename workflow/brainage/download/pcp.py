"""ABIDE PCP ROI series (``<FILE_ID>_rois_<atlas>.1D``) -> brainage ROI series Parquet + QC record."""

from __future__ import annotations

import io
import logging
import os
import re
from pathlib import Path

import numpy as np

from brainage import storage
from brainage.errors import ConfigError, InputDataError

logger = logging.getLogger(__name__)

#: One header field of a PCP ``.1D`` ROI file: ``#`` and the atlas label value (``#1``, ``#2001``).
_HEADER_FIELD = re.compile(r"#([1-9][0-9]*)")
#: The derivative in a PCP file name: ``KKI_0050772_rois_cc200.1D`` -> ``rois_cc200``.
_DERIVATIVE = re.compile(r"_(rois_[a-z0-9]+)\.1D$")
#: The QC stage name: these series replace the extraction stage's output.
STAGE = "extract"
PREPROCESSING = "ABIDE Preprocessed Connectomes Project (PCP)"


def convert_pcp_rois(
    participant_id: str,
    rois_1d: str | os.PathLike,
    params: dict,
    series_out: str | os.PathLike,
    qc_out: str | os.PathLike,
    *,
    mean_fd: float | None = None,
) -> dict:
    """Convert one ABIDE PCP ROI series file into a brainage ROI series and a QC record.

    The ``.1D`` file is tab-separated text: a header ``#<label>\\t#<label>...`` (atlas label
    values) and one row per volume. Columns keep the label values as names, ``roi_`` plus
    the value zero-padded to 3 digits, as :mod:`brainage.download.atlas` names atlas labels
    (``#1`` -> ``roi_001``, ``#2001`` -> ``roi_2001``). Values are stored as float32, not
    rescaled. Regions constant over time (limited field of view) are kept and counted.

    Bad subject data does not raise: the subject is recorded as excluded in the QC record,
    with a well-formed empty series (no rows), one ERROR log line, and the workflow goes on.

    Parameters
    ----------
    participant_id : str
        e.g. ``sub-0050772``.
    rois_1d : path
        ``<FILE_ID>_rois_<atlas>.1D`` as PCP publishes it.
    params : dict
        ``min_frames`` (int, ``extract.min_frames``) is used. Optional string keys
        ``pcp_pipeline`` (e.g. ``cpac``) and ``pcp_strategy`` (e.g. ``filt_global``) are
        recorded in the provenance (the rule passes the dataset entry's).
    series_out : path
        ROI series Parquet, shape (n_timepoints, n_regions), float32.
    qc_out : path
        QC JSON: participant_id, stage, status (``included``/``excluded``), reason,
        n_timepoints, n_frames_kept, mean_fd (mm or None), n_regions, n_constant_regions,
        constant_regions, source.
    mean_fd : float, optional
        Mean framewise displacement (mm) from the phenotype table (PCP ``func_mean_fd``),
        copied into the QC record; None when unknown.

    Returns
    -------
    dict
        The QC record written to ``qc_out``.

    Raises
    ------
    ConfigError
        If ``params`` lacks ``min_frames`` or it is not an integer >= 1.
    FileNotFoundError
        If ``rois_1d`` does not exist (a workflow error, not bad subject data).
    """
    min_frames = _min_frames(params)
    path = Path(rois_1d)
    if not path.is_file():
        raise FileNotFoundError(f"PCP ROI series file {path} not found")
    qc = {"participant_id": participant_id, "stage": STAGE, "status": "included", "reason": None,
          "n_timepoints": None, "n_frames_kept": None, "mean_fd": mean_fd, "n_regions": None,
          "n_constant_regions": None, "constant_regions": [], "source": path.name}
    provenance = {"params": params, "sources": {"rois": path.name}, "preprocessing": PREPROCESSING,
                  "derivative": _derivative(path), "pcp_pipeline": params.get("pcp_pipeline"),
                  "pcp_strategy": params.get("pcp_strategy")}
    labels: list[str] = []
    try:
        lines = _read_lines(path)
        labels = _parse_header(path, lines[0] if lines else "")
        qc["n_regions"] = len(labels)
        data = _parse_values(path, lines[1:], len(labels))
        _check_series(path, data, labels, min_frames, qc)
    except InputDataError as err:
        logger.error("%s excluded: %s", participant_id, err)
        qc.update(status="excluded", reason=str(err))
        provenance.update(status="excluded", reason=str(err))
        storage.write_timeseries(series_out, np.zeros((0, len(labels))), labels,
                                 participant_id=participant_id, provenance=provenance)
    else:
        logger.info("%s: %d frames, %d regions (%d constant) from %s", participant_id,
                    data.shape[0], data.shape[1], qc["n_constant_regions"], path.name)
        provenance.update(status="included", frames=list(range(data.shape[0])),
                          n_timepoints=data.shape[0], constant_regions=qc["constant_regions"])
        storage.write_timeseries(series_out, data.astype(np.float32), labels,
                                 participant_id=participant_id, provenance=provenance)
    storage.write_json(qc_out, qc)
    return qc


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="ascii").splitlines()
    except UnicodeDecodeError as err:
        raise InputDataError(f"{path}: expected a tab-separated text file, found non-text bytes ({err})") from err


def _parse_header(path: Path, first: str) -> list[str]:
    """``roi_<label>`` per ``#<label>`` header field (label zero-padded to 3 digits), in file order."""
    matches = [_HEADER_FIELD.fullmatch(f.strip()) for f in first.split("\t")]
    if not first.strip() or not all(matches):
        raise InputDataError(
            f"{path}: expected a header line of tab-separated '#<label>' fields (e.g. '#1\\t#2'), "
            f"found {first[:60]!r}"
        )
    values = [int(m.group(1)) for m in matches]
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise InputDataError(f"{path}: header repeats label(s) {repeated[:10]}; expected unique labels")
    return [f"roi_{v:03d}" for v in values]


def _parse_values(path: Path, rows: list[str], n_regions: int) -> np.ndarray:
    """The rows after the header, shape (n_timepoints, n_regions), float64; NaN/inf kept as written."""
    text = "\n".join(line for line in rows if line.strip())
    if not text:
        return np.zeros((0, n_regions))
    try:
        # numpy's C parser names the offending value or row and reads 300 x 200 values in ms.
        data = np.loadtxt(io.StringIO(text), delimiter="\t", ndmin=2, dtype=np.float64, comments=None)
    except ValueError as err:
        raise InputDataError(f"{path}: expected rows of {n_regions} tab-separated numbers: {err}") from err
    if data.shape[1] != n_regions:
        raise InputDataError(
            f"{path}: the header names {n_regions} regions, but the rows hold {data.shape[1]} values"
        )
    return data


def _check_series(path: Path, data: np.ndarray, labels: list[str], min_frames: int, qc: dict) -> None:
    """Fill ``qc`` with frame and region counts; raise for data no model can use."""
    n_timepoints = data.shape[0]
    qc["n_timepoints"] = qc["n_frames_kept"] = n_timepoints
    if n_timepoints == 0:
        raise InputDataError(f"{path}: header but no data rows; expected one row per volume")
    bad = ~np.isfinite(data)
    if bad.any():
        rows, cols = np.nonzero(bad)
        raise InputDataError(
            f"{path}: {int(bad.sum())} values are NaN or infinite (first at data row {rows[0] + 1}, "
            f"region {labels[cols[0]]}); expected finite numbers"
        )
    if n_timepoints < min_frames:
        raise InputDataError(f"{path}: {n_timepoints} frames, need {min_frames} (extract.min_frames)")
    constant = np.ptp(data, axis=0) == 0
    qc["n_constant_regions"] = int(constant.sum())
    qc["constant_regions"] = [label for label, c in zip(labels, constant) if c]
    if constant.all():
        raise InputDataError(f"{path}: every one of the {len(labels)} regions is constant over time")
    if constant.any():
        # Kept: PCP's own outputs have such columns where the field of view misses a region
        # (25 of 831 ABIDE cc200 subjects). nilearn's ConnectivityMeasure (z-scoring, then
        # LedoitWolf shrinkage) gives them finite, zero connectivity, so models still run.
        logger.warning("%s: %d of %d regions constant over time: %s", path.name, int(constant.sum()),
                       len(labels), qc["constant_regions"])


def _min_frames(params: dict) -> int:
    value = params.get("min_frames")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"extract.min_frames must be an integer >= 1, found {value!r}")
    return value


def _derivative(path: Path) -> str | None:
    match = _DERIVATIVE.search(path.name)
    return match.group(1) if match else None
