"""brainage.report.extraction: the denoising presets, censoring and every atlas in the methods text."""

import json

import numpy as np
import pandas as pd
import pytest
from extract_fixtures import make_subject
from nilearn.interfaces.fmriprep import load_confounds

from brainage import storage
from brainage.errors import InputDataError
from brainage.extract.params import confound_arguments
from brainage.report.extraction import atlas_description, atlases_text, denoising_text, regressor_groups
from brainage.report.inputs import read_atlas_dirs

# A hand-written extract section (the values matter, not config/config.yaml's current ones).
EXTRACT = {
    "denoise": "simple", "scrub": True, "fd_threshold": 0.5, "std_dvars_threshold": 3.0, "scrub_min_segment": 5,
    "high_pass": 0.01, "low_pass": 0.1, "detrend": True, "standardize": "zscore_sample", "min_frames": 40,
    "min_seconds": 120, "min_region_coverage": 0.5, "on_region_loss": "exclude", "volume_voxel_size": 8,
    "volume_scaling": "global",
    "custom": {"strategy": ["motion", "wm_csf", "high_pass"], "motion": "full", "wm_csf": "basic",
               "global_signal": "basic", "compcor": "anat_combined", "n_compcor": "all"},
}


def extract(**changes):
    return EXTRACT | changes


def custom(**changes):
    return extract(denoise="custom", custom=EXTRACT["custom"] | changes)


@pytest.mark.parametrize("section, regressors, citation", [
    (extract(), "24 motion + WM and CSF means + fMRIPrep's discrete-cosine high-pass regressors "
                "(26 regressors plus the cosines)", "nilearn's 'simple' strategy (Fox et al. 2005)"),
    (extract(denoise="24P"), ": 24 motion (24 regressors).", "the 24P model (Friston et al. 1996)"),
    (extract(denoise="27P"), "24 motion + WM, CSF and global signal means (27 regressors)",
     "the 27P model (Ciric et al. 2017)"),
    (extract(denoise="36P"), "24 motion + WM, CSF and global signal each with derivative, square and squared "
                             "derivative (36 regressors)", "the 36P model (Satterthwaite et al. 2013)"),
    (extract(denoise="acompcor"), "12 motion + 5 WM and 5 CSF aCompCor components (Behzadi et al. 2007) + "
                                  "fMRIPrep's discrete-cosine high-pass regressors (22 regressors plus the cosines)",
     "the aCompCor model (Behzadi et al. 2007; Muschelli et al. 2014)"),
    (extract(denoise="acompcor_gsr"), "12 motion + global signal with derivative + 5 WM and 5 CSF aCompCor "
                                      "components (Behzadi et al. 2007) + fMRIPrep's discrete-cosine high-pass "
                                      "regressors (24 regressors plus the cosines)",
     "the aCompCor model with global signal regression"),
    (custom(strategy=["motion", "wm_csf"], motion="derivatives", wm_csf="power2"),
     "12 motion + WM and CSF each with square (16 regressors)", "a custom selection (strategy motion, wm_csf)"),
    (custom(strategy=["global_signal"], global_signal="basic"), ": global signal (1 regressor)", "a custom selection"),
    (custom(strategy=["motion", "compcor", "high_pass"], motion="basic", compcor="temporal_anat_separated",
            n_compcor=2), "6 motion + 2 tCompCor, 2 WM and 2 CSF aCompCor components (Behzadi et al. 2007)",
     "(12 regressors plus the cosines)"),
    (custom(strategy=["compcor", "high_pass"]), "the aCompCor components of the combined WM and CSF mask "
                                                "explaining 50% of the variance", "(the CompCor components and the "
                                                                                 "cosines)"),
    (custom(strategy=[]), "load_confounds: no confound was regressed.", "(strategy none)"),
])
def test_each_preset_names_its_regressors(section, regressors, citation):
    text = denoising_text(section)
    assert regressors in text and citation in text
    assert f"the denoising preset {section['denoise']}," in text


def test_motion_expansion_is_spelled_out():
    assert ("The 24 motion regressors are the 6 rigid-body parameters, their temporal derivatives and the squares "
            "of both (Friston et al. 1996).") in denoising_text(extract(denoise="36P"))
    assert ("The 12 motion regressors are the 6 rigid-body parameters and their temporal derivatives."
            in denoising_text(extract(denoise="acompcor")))
    assert "motion regressors are" not in denoising_text(custom(strategy=["wm_csf"]))


@pytest.fixture(scope="module")
def subject_with_compcor(tmp_path_factory):
    """A synthetic fMRIPrep subject whose confounds hold 6 components of every CompCor kind (3 cosines)."""
    subject = make_subject(tmp_path_factory.mktemp("compcor"))
    conf = pd.read_csv(subject.confounds, sep="\t")
    sidecar = subject.confounds.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    rng = np.random.default_rng(0)
    for prefix, mask in (("c", "CSF"), ("w", "WM"), ("t", "combined"), ("a", "combined")):
        for i in range(6):
            conf[f"{prefix}_comp_cor_{i:02d}"] = rng.normal(size=len(conf))
            meta[f"{prefix}_comp_cor_{i:02d}"] = {"Method": "tCompCor" if prefix == "t" else "aCompCor",
                                                  "Retained": True, "Mask": mask}
    conf.to_csv(subject.confounds, sep="\t", index=False, na_rep="n/a")
    sidecar.write_text(json.dumps(meta))
    return subject, sum(c.startswith("cosine") for c in conf.columns)


@pytest.mark.parametrize("section", [
    extract(denoise=name) for name in ("simple", "24P", "27P", "36P", "acompcor", "acompcor_gsr")
] + [
    custom(strategy=["motion", "wm_csf", "global_signal"], motion="power2", wm_csf="derivatives",
           global_signal="full"),
    custom(strategy=["motion", "compcor", "high_pass"], compcor="anat_combined", n_compcor=3),
    custom(strategy=["compcor", "high_pass"], compcor="temporal_anat_separated", n_compcor=2),
    custom(strategy=["compcor", "high_pass"], compcor="temporal_anat_combined", n_compcor=4),
    custom(strategy=["compcor", "high_pass"], compcor="temporal", n_compcor=5),
])
def test_stated_regressor_count_is_what_nilearn_regresses(subject_with_compcor, section):
    # The count in the text is nilearn's own column count for the same arguments (cosines apart).
    subject, n_cosines = subject_with_compcor
    args = confound_arguments(section | {"scrub": False})
    confounds, _ = load_confounds(str(subject.bold), demean=True, **args)
    known = sum(n for n, _ in regressor_groups(args) if n is not None)
    assert confounds.shape[1] == known + (n_cosines if "high_pass" in args["strategy"] else 0)
    assert f"({known} regressor" in denoising_text(section) or known == 0


@pytest.mark.parametrize("changes, expected, absent", [
    ({}, "Frames with framewise displacement above 0.5 mm or standardised DVARS above 3 were censored (scrubbing; "
         "Power et al. 2014), together with kept segments shorter than 5 frames.", "not used for censoring"),
    ({"fd_threshold": None}, "Frames with standardised DVARS above 3 were censored (scrubbing; Power et al. 2014), "
                             "together with kept segments shorter than 5 frames. Framewise displacement was not "
                             "used for censoring (threshold null).", "framewise displacement above"),
    ({"std_dvars_threshold": None, "fd_threshold": 0.2}, "Frames with framewise displacement above 0.2 mm were "
                                                         "censored", "DVARS above"),
    ({"std_dvars_threshold": None}, "DVARS was not used for censoring (threshold null).", "DVARS above"),
    ({"fd_threshold": None, "std_dvars_threshold": None},
     "Scrubbing was on, but both thresholds were null, so no frame was censored for motion.", "segments"),
    ({"scrub_min_segment": 0}, "with no minimum segment length.", "shorter than"),
    ({"scrub": False}, "No frames were censored for motion (extract.scrub off).", "above 0.5 mm"),
    ({"min_frames": 60, "min_seconds": 300}, "Runs with fewer than 60 frames (extract.min_frames) or less than 300 s "
                                             "of clean data (frames kept x repetition time; extract.min_seconds) "
                                             "left were excluded.", "fewer than 40"),
    ({"min_seconds": 0}, "or less than 0 s of clean data", "120 s"),
])
def test_censoring_and_minimum_clean_time(changes, expected, absent):
    text = denoising_text(extract(**changes))
    assert expected in text and absent not in text
    assert "Non-steady-state volumes flagged by fMRIPrep were removed." in text


@pytest.mark.parametrize("changes, expected", [
    ({}, "(linear detrending, band-pass filtering between 0.01 and 0.1 Hz, confound regression and censoring)"),
    ({"low_pass": None, "detrend": False}, "(no detrending, high-pass filtering at 0.01 Hz, confound regression"),
    ({"high_pass": None}, "low-pass filtering at 0.1 Hz"),
    ({"standardize": "psc"}, "Region series were converted to percent signal change."),
])
def test_cleaning_steps(changes, expected):
    text = denoising_text(extract(**changes))
    assert expected in text
    assert "The filter was a Butterworth filter; frames removed by censoring were interpolated" in text


def test_no_filter_no_butterworth_sentence():
    text = denoising_text(extract(high_pass=None, low_pass=None))
    assert "no temporal filtering" in text and "Butterworth" not in text


# --- atlases ------------------------------------------------------------------------------

SCHAEFER = {"id": "schaefer400n7", "name": "schaefer", "kind": "labels", "image": "atlas.nii.gz", "radius_mm": None,
            "space": "MNI152NLin6Asym", "source": "https://example.org/schaefer",
            "citation": "Schaefer et al. 2018, Cereb Cortex 28:3095",
            "spec": {"name": "schaefer", "id": "schaefer400n7", "n_rois": 400, "yeo_networks": 7, "resolution_mm": 2}}
MSDL = {"id": "msdl", "name": "msdl", "kind": "maps", "image": "atlas.nii.gz", "radius_mm": None,
        "space": "MNI152 (FSL)", "source": "nilearn shipped data", "citation": "Varoquaux et al. 2011, IPMI",
        "spec": {"name": "msdl", "id": "msdl"}}
POWER = {"id": "power264", "name": "power", "kind": "spheres", "image": None, "radius_mm": 5.0,
         "space": "MNI152", "source": "nilearn 0.13.1 shipped data", "citation": "Power et al. 2011, Neuron 72:665",
         "spec": {"name": "power", "id": "power264", "radius_mm": 5.0}}
KMEANS = {"id": "kmeans100", "name": "kmeans", "kind": "labels", "image": "atlas.nii.gz", "radius_mm": None,
          "space": "MNI152NLin6Asym", "source": "generated", "citation": "",
          "spec": {"name": "kmeans", "n_regions": 100}}


def write_atlas(folder, meta, n_regions):
    folder.mkdir(parents=True)
    storage.write_json(folder / "atlas.json", meta)
    storage.write_tsv(folder / "labels.tsv", pd.DataFrame({"index": range(1, n_regions + 1),
                                                          "name": [f"r{i}" for i in range(n_regions)]}))
    return folder


def test_atlas_folders_are_read_with_their_region_counts(tmp_path):
    folders = [write_atlas(tmp_path / m["id"], m, n) for m, n in ((KMEANS, 100), (MSDL, 39), (POWER, 264))]
    metas = read_atlas_dirs(folders)
    assert [(m["id"], m["kind"], m["n_regions"]) for m in metas] == [
        ("kmeans100", "labels", 100), ("msdl", "maps", 39), ("power264", "spheres", 264)]
    assert metas[2]["citation"] == "Power et al. 2011, Neuron 72:665"


def test_bad_atlas_folders_are_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputDataError, match=r"empty/atlas\.json: file not found \(expected an atlas folder"):
        read_atlas_dirs([tmp_path / "empty"])
    folder = write_atlas(tmp_path / "nokind", {k: v for k, v in MSDL.items() if k != "kind"}, 3)
    with pytest.raises(InputDataError, match=r"nokind/atlas\.json: atlas description lacks \['kind'\]"):
        read_atlas_dirs([folder])
    folder = write_atlas(tmp_path / "nolabels", MSDL, 3)
    storage.write_tsv(folder / "labels.tsv", pd.DataFrame({"label": [1]}))
    with pytest.raises(InputDataError, match=r"nolabels/labels\.tsv: atlas label table lacks columns \['index', 'n"):
        read_atlas_dirs([folder])


def test_every_atlas_is_described_from_its_atlas_json():
    specs = [{"name": "kmeans", "n_regions": 100}, {"name": "schaefer", "n_rois": 400, "yeo_networks": 7},
             {"name": "msdl"}, {"name": "power"}]
    metas = [KMEANS | {"n_regions": 100}, SCHAEFER | {"n_regions": 400}, MSDL | {"n_regions": 39},
             POWER | {"n_regions": 264}]
    text = atlases_text(specs, EXTRACT, metas)
    assert text.startswith("ROI series were computed for 4 atlases from the same cleaned data, one file per atlas: "
                           "(1) a 100-region atlas made by k-means clustering")
    assert ("(2) the Schaefer 2018 atlas (n_rois=400, resolution_mm=2, yeo_networks=7; 400 regions; Schaefer et al. "
            "2018, Cereb Cortex 28:3095; MNI152NLin6Asym, from https://example.org/schaefer) (atlas-schaefer400n7): "
            "the mean cleaned signal of each region's in-mask voxels") in text
    assert ("(3) the MSDL atlas (39 probabilistic maps; Varoquaux et al. 2011, IPMI; MNI152 (FSL), from nilearn "
            "shipped data) (atlas-msdl): the least-squares fit of the maps") in text
    assert ("(4) the Power 2011 atlas (radius_mm=5; 264 spheres; Power et al. 2011, Neuron 72:665; MNI152, from "
            "nilearn 0.13.1 shipped data) (atlas-power264): the mean cleaned signal of the in-mask voxels within "
            "5 mm of each coordinate, as nilearn's NiftiSpheresMasker") in text
    assert "The first atlas fed the ROI models." in text


def test_atlases_without_atlas_json_are_described_from_the_config():
    text = atlases_text([{"name": "kmeans", "n_regions": 50}], EXTRACT)
    assert text.startswith("ROI series were computed for one atlas, a 50-region atlas made by k-means clustering of "
                           "the voxel coordinates of nilearn's MNI152 brain mask")
    assert "; it fed the ROI models." in text
    assert atlas_description({"name": "dosenbach", "id": "dos"}) == "the Dosenbach 2010 atlas"
    assert "(atlas-dos): the mean cleaned signal of the in-mask voxels in a sphere around each coordinate" in (
        atlases_text([{"name": "kmeans", "n_regions": 5}, {"name": "dosenbach", "id": "dos"}], EXTRACT))
    assert atlas_description({"name": "basc", "resolution": 122, "version": "sym"}) == (
        "the BASC multiscale atlas (resolution=122, version=sym)")
    assert atlas_description({"name": "file", "path": "cc200.nii.gz"}, {"n_regions": 200, "kind": "labels"}) == (
        "the label image cc200.nii.gz (200 regions, each non-zero integer label one region)")


@pytest.mark.parametrize("changes, expected", [
    ({}, "A region was lost on a run when less than 50% of its volume lay inside the brain mask on the BOLD grid, or "
         "when it vanished on resampling (extract.min_region_coverage 0.5); a run with a lost region in any atlas "
         "was excluded, naming the regions (extract.on_region_loss exclude). Each region's coverage is stored with "
         "its series."),
    ({"min_region_coverage": 0.25, "on_region_loss": "warn"},
     "less than 25% of its volume lay inside the brain mask on the BOLD grid, or when it vanished on resampling "
     "(extract.min_region_coverage 0.25); such runs were kept with a warning (extract.on_region_loss warn); a "
     "region without any voxel is then an all-zero column."),
])
def test_coverage_rule(changes, expected):
    assert expected in atlases_text([{"name": "kmeans", "n_regions": 100}], extract(**changes))


def test_atlases_built_by_the_registry_are_described(tmp_path, monkeypatch):
    # Real atlas folders from brainage.download.atlas (offline entries), read back as the report rule passes them.
    from brainage.download.atlas import build_atlas, validate_spec

    monkeypatch.setenv("NILEARN_DATA", str(tmp_path / "nilearn"))
    specs = [{"name": "kmeans", "n_regions": 10}, {"name": "power"}, {"name": "dosenbach"}]
    folders = []
    for spec in specs:
        full = validate_spec(spec)
        folders.append(tmp_path / full["id"])
        build_atlas(full, 0, folders[-1], data_dir=tmp_path / "nilearn")
    text = atlases_text(specs, EXTRACT, read_atlas_dirs(folders))
    assert text.startswith("ROI series were computed for 3 atlases from the same cleaned data, one file per atlas: "
                           "(1) a 10-region atlas made by k-means clustering")
    assert "(2) the Power 2011 atlas (radius_mm=5; 264 spheres; Power JD et al. 2011, Functional network" in text
    assert "within 5 mm of each coordinate, as nilearn's NiftiSpheresMasker; (3) the Dosenbach 2010" in text
    assert "160 spheres; Dosenbach NUF et al. 2010" in text
    # Dosenbach's spheres overlap at 5 mm (closest centres 8.5 mm apart), Power's do not.
    assert text.count("(overlapping spheres share their common voxels)") == 1
    assert text.index("overlapping") > text.index("(3) the Dosenbach")
