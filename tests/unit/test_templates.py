"""brainage.templates: an atlas in another template than the BOLD is named (log and report), the 2009 family is one."""

from pathlib import Path

import pytest
import yaml

from brainage.report.methods import features_text
from brainage.templates import bold_space, other_template

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("atlas", "bold", "differs"), [
    ("MNI152NLin6Asym", "MNI152NLin2009cAsym", True),    # FSL's MNI152 against fMRIPrep's default
    ("MNI152NLin2009aSym", "MNI152NLin2009cAsym", False),  # nilearn's template: the same ICBM 2009 family
    ("MNI152NLin2009cAsym", "MNI152NLin2009cAsym", False),
    ("MNI152Lin", "MNI152NLin6Asym", True),
    ("MNI152", "MNI152NLin2009cAsym", True),               # generic "MNI152" is not the 2009 family
    (None, "MNI152NLin2009cAsym", False),                   # unknown: nothing to say
    ("MNI152NLin6Asym", None, False),
])
def test_other_template(atlas, bold, differs):
    assert other_template(atlas, bold) is differs


def test_bold_space_is_read_from_the_fmriprep_name():
    assert bold_space("sub-01_ses-1_task-rest_space-MNI152NLin6Asym_res-2_desc-preproc_bold.nii.gz") == "MNI152NLin6Asym"
    assert bold_space("Caltech_0051456_func_preproc.nii.gz") is None


def test_the_methods_text_warns_about_an_atlas_in_another_template():
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["inputs"]["source"] = "fmriprep"
    metas = [{"id": "kmeans100", "space": "MNI152NLin2009aSym", "kind": "labels", "n_regions": 100},
             {"id": "schaefer", "space": "MNI152NLin6Asym", "kind": "labels", "n_regions": 200}]
    config["atlases"] = [{"name": "kmeans", "n_regions": 100}, {"name": "file", "path": "/a.nii.gz", "id": "schaefer"}]
    text = features_text(config, metas)
    assert ("Warning: atlas-schaefer (MNI152NLin6Asym) is defined in another template than the BOLD "
            "(MNI152NLin2009cAsym); no transform between the templates was applied") in text
    assert "kmeans100 (MNI152NLin2009aSym)" not in text
    config["atlases"] = config["atlases"][:1]
    assert "Warning" not in features_text(config, metas[:1])
