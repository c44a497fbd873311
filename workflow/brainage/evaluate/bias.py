"""Linear age-bias correction (regression to the mean), fitted on training subjects only."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import stats

log = logging.getLogger(__name__)

# Below this slope the predictions barely depend on age (the dummy predicts a constant), and
# dividing by the slope would blow the noise up instead of removing a bias.
MIN_SLOPE = 0.1


@dataclass(frozen=True)
class BiasFit:
    """A fitted ``predicted = slope * age + intercept`` line.

    Attributes
    ----------
    slope, intercept : float
        Least-squares fit on the training subjects' out-of-sample predictions (years).
    applied : bool
        False when the correction is disabled or the slope is too small to invert.
    n : int
        Number of training predictions the line was fitted on.
    """

    slope: float
    intercept: float
    applied: bool
    n: int

    def correct(self, predicted: np.ndarray) -> np.ndarray:
        """Return ``(predicted - intercept) / slope``, or ``predicted`` when not applied.

        Parameters
        ----------
        predicted : ndarray, shape (n_subjects,), float (years)

        Returns
        -------
        ndarray, shape (n_subjects,), float64 (years)
        """
        predicted = np.asarray(predicted, dtype=float)
        if not self.applied:
            return predicted.copy()
        return (predicted - self.intercept) / self.slope


# Disabled correction (``bias_correction: false``): corrected = predicted.
UNCORRECTED = BiasFit(slope=1.0, intercept=0.0, applied=False, n=0)


def fit_bias(age: np.ndarray, predicted: np.ndarray, label: str = "") -> BiasFit:
    """Fit the age bias of predictions on training subjects.

    Brain-age predictions regress to the mean: the young are over-estimated and the old
    under-estimated. Fitting ``predicted = a * age + b`` on training subjects and inverting
    it (``corrected = (predicted - b) / a``) removes that bias (Beheshti et al. 2019,
    NeuroImage Clin 24:102063; de Lange & Cole 2020, NeuroImage Clin 26:102229). The line
    must be fitted on training subjects' out-of-sample predictions, never on the test
    subjects, or the test error is optimistically biased.

    Parameters
    ----------
    age, predicted : ndarray, shape (n_subjects,), float (years)
        True and out-of-sample predicted ages of training subjects.
    label : str
        Names the model and fold in log and error messages.

    Returns
    -------
    BiasFit
        ``applied`` is False when ``|slope| < MIN_SLOPE`` (logged).

    Raises
    ------
    ValueError
        Fewer than two subjects, or all ages equal (no line can be fitted).
    """
    age, predicted = np.asarray(age, dtype=float), np.asarray(predicted, dtype=float)
    if len(age) < 2 or np.ptp(age) == 0:
        raise ValueError(
            f"{label}: cannot fit the age-bias line on {len(age)} 'inner' predictions "
            f"with ages {np.unique(age).tolist()[:5]}; it needs at least two different ages"
        )
    fit = stats.linregress(age, predicted)
    applied = abs(fit.slope) >= MIN_SLOPE
    if not applied:
        log.info(
            "%s: age-bias slope %.3f below %.1f; predictions left uncorrected", label, fit.slope, MIN_SLOPE
        )
    return BiasFit(slope=float(fit.slope), intercept=float(fit.intercept), applied=bool(applied), n=len(age))
