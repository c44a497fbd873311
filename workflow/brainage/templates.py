"""Template spaces: whether an atlas and the BOLD are in the same one (no imports beyond the standard library)."""

from __future__ import annotations

import re
from pathlib import Path

# The ICBM 2009 nonlinear MNI152 versions, one family: nilearn's template (2009a symmetric, on which
# the kmeans atlas and the demo are built) and fMRIPrep's default output space (2009c asymmetric).
_ICBM2009 = re.compile(r"^MNI152NLin2009[abc](Sym|Asym)$")
_SPACE = re.compile(r"_space-([A-Za-z0-9]+)_")


def bold_space(bold: str | Path) -> str | None:
    """The ``space-`` entity of a BOLD file name (fMRIPrep's), None when it has none (e.g. ABIDE PCP)."""
    match = _SPACE.search(Path(bold).name)
    return match.group(1) if match else None


def other_template(atlas_space: str | None, bold_space_: str | None) -> bool:
    """True when an atlas and the BOLD are in different template families (a warning is due).

    Unknown spaces compare as equal (nothing to say). The ICBM 2009 nonlinear versions
    (``MNI152NLin2009aSym`` … ``MNI152NLin2009cAsym``) count as one family; ``MNI152NLin6Asym``
    (FSL's MNI152), ``MNI152Lin`` and non-MNI templates differ from them and from each other.
    """
    if not atlas_space or not bold_space_:
        return False
    return atlas_space != bold_space_ and not (_ICBM2009.match(atlas_space) and _ICBM2009.match(bold_space_))
