"""Tests for brainage.export: BIDS-Derivatives series, matrices and atlases that other tools read; volumes as NIfTI."""

import hashlib
import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
from bids.layout import parse_file_entities
from extract_fixtures import REPO, extract_params, make_subject, outputs, write_atlas_dir

from brainage import storage
from brainage._version import source_version
from brainage.download.pcp import convert_pcp_rois
from brainage.errors import ConfigError, InputDataError
from brainage.export import dataset_description, export_derivatives, export_volumes, source_datasets
from brainage.export.__main__ import main
from brainage.export.names import series_entities
from brainage.extract.subject import extract_subject
from brainage.storage.bids import write_relmat_tsv, write_timeseries_tsv

CONFIG = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
SPACE = "MNI152NLin2009cAsym"
ATLASES = ("octants", "blobs", "spheres")


def _maps(folder, affine):
    # Three overlapping Gaussian blobs on the fixture's 8 x 8 x 8, 4 mm grid: a probabilistic atlas.
    ijk = np.indices((8, 8, 8)).transpose(1, 2, 3, 0)
    maps = np.stack([np.exp(-((ijk - c) ** 2).sum(-1) / 4.0) for c in [(2, 2, 2), (5, 4, 3), (3, 6, 5)]], axis=-1)
    image = folder.parent / "maps.nii.gz"
    image.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(maps.astype(np.float32), affine), image)
    return write_atlas_dir(folder, image, pd.DataFrame({"index": [1, 2, 3], "name": ["a", "b", "c"]}), kind="maps")


def _spheres(folder):
    labels = pd.DataFrame({"index": [1, 2], "name": ["s0", "s1"], "x": [-4.0, 6.0], "y": [-4.0, 2.0],
                           "z": [-4.0, 0.0]})
    return write_atlas_dir(folder, None, labels, kind="spheres", radius_mm=6.0)


def _extract(root, participant_id, runs, atlases, **params):
    """Real series and volumes of one subject (every atlas in one pass); returns the output paths."""
    out = root / participant_id
    series = [out / f"{participant_id}_atlas-{a.name}_timeseries.parquet" for a in atlases]
    volumes = out / f"{participant_id}_volumes.parquet"
    extract_subject(participant_id, [r.bold for r in runs], [r.mask for r in runs], atlases,
                    extract_params(**params), series, volumes, out / f"{participant_id}_qc.json",
                    confounds=[r.confounds for r in runs])
    return series, volumes


def _cohort(path, participant_ids):
    table = pd.DataFrame({"participant_id": participant_ids, "dataset": "test", "site": "A",
                          "age": 30.0 + np.arange(len(participant_ids)), "sex": "F",
                          "n_timepoints": 60, "n_frames_kept": 60, "mean_fd": 0.1})
    storage.write_table(path, table, kind="cohort")
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """sub-01: one run (ses-2, run-3); sub-02: runs 1 and 2 joined; sub-03: excluded at extraction."""
    root = tmp_path_factory.mktemp("export")
    one = make_subject(root / "in01", n=60, session="2", run="3")
    atlases = [one.atlas_dir, _maps(root / "atlases" / "blobs", one.truth["affine"]),
               _spheres(root / "atlases" / "spheres")]
    runs = [make_subject(root / "in02", n=60, seed=k, run=str(k)) for k in (1, 2)]
    excluded = make_subject(root / "in03", n=60, seed=3)
    series = {"sub-01": _extract(root / "out", "sub-01", [one], atlases),
              "sub-02": _extract(root / "out", "sub-02", runs, atlases),
              "sub-03": _extract(root / "out", "sub-03", [excluded], atlases, min_frames=1000)}
    cohort = _cohort(root / "cohort.parquet", ["sub-01", "sub-02"])
    derivatives = root / "derivatives"
    every = [path for paths, _ in series.values() for path in paths]
    summary = export_derivatives(every, atlases, cohort, CONFIG, derivatives)
    return {"root": root, "series": series, "atlases": atlases, "cohort": cohort, "out": derivatives,
            "summary": summary, "runs": runs, "one": one}


def _files(study, participant_id, atlas, pattern):
    return sorted((study["out"] / participant_id).rglob(f"*_seg-{atlas}_{pattern}"))


def test_timeseries_tsv_round_trips_to_the_parquet_series(study):
    for pid in ("sub-01", "sub-02"):
        for k, atlas in enumerate(ATLASES):
            series = storage.read_timeseries(study["series"][pid][0][k])
            (tsv,) = _files(study, pid, atlas, "stat-mean_timeseries.tsv")
            table = pd.read_csv(tsv, sep="\t", na_values="n/a")
            assert list(table.columns) == series.labels  # no index column
            np.testing.assert_array_equal(table.to_numpy().astype(np.float32), series.data)
            sidecar = json.loads(tsv.with_suffix(".json").read_text())
            assert sidecar["KeptFrames"] == series.metadata["frames"] and len(table) == len(sidecar["KeptFrames"])
            assert sidecar["RepetitionTime"] == 2.0 and sidecar["Atlas"] == atlas


def test_relmat_is_the_correlation_of_the_series_as_xcpd_users_read_it(study):
    series = storage.read_timeseries(study["series"]["sub-01"][0][0])
    (relmat,) = _files(study, "sub-01", "octants", "stat-pearsoncorrelation_relmat.tsv")
    assert relmat.read_text().split("\t", 1)[0] == "Node"  # XCP-D's header of the names column
    matrix = pd.read_csv(relmat, sep="\t", index_col=0)
    assert list(matrix.index) == list(matrix.columns) == series.labels
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = np.corrcoef(series.data.astype(np.float64), rowvar=False)
    np.testing.assert_allclose(matrix.to_numpy(), expected, atol=1e-6)
    values = matrix.to_numpy()
    np.testing.assert_array_equal(values, values.T)
    defined = ~np.isnan(np.diag(values))
    np.testing.assert_allclose(np.diag(values)[defined], 1.0, atol=1e-6)
    # roi_009 has no voxel in the fixture: a constant series, no correlation, "n/a" in the file.
    assert not defined[series.labels.index("roi_009")] and "n/a" in relmat.read_text()
    sidecar = json.loads(relmat.with_suffix(".json").read_text())
    assert sidecar["RelationshipMeasure"] == "Pearson correlation coefficient" and sidecar["StorageFormat"] == "Full"
    for uri in sidecar["Sources"] + sidecar["NodeFiles"]:
        assert uri.startswith("bids::") and (study["out"] / uri.removeprefix("bids::")).is_file()


def test_names_parse_back_to_the_run_entities_and_joined_runs_drop_run(study):
    (one,) = _files(study, "sub-01", "octants", "stat-mean_timeseries.tsv")
    assert one.relative_to(study["out"]).parts[:3] == ("sub-01", "ses-2", "func")
    entities = parse_file_entities(str(one))
    assert {k: entities.get(k) for k in ("subject", "session", "task", "run", "space", "segmentation")} == {
        "subject": "01", "session": "2", "task": "rest", "run": 3, "space": SPACE, "segmentation": "octants"}
    assert "stat-mean" in one.name and "res" not in entities and "desc" not in entities
    (joined,) = _files(study, "sub-02", "octants", "stat-pearsoncorrelation_relmat.tsv")
    entities = parse_file_entities(str(joined))
    assert entities["subject"] == "02" and entities["task"] == "rest" and "run" not in entities
    assert joined.name == f"sub-02_task-rest_space-{SPACE}_seg-octants_stat-pearsoncorrelation_relmat.tsv"
    sidecar = json.loads((joined.parent / joined.name.replace("stat-pearsoncorrelation_relmat", "stat-mean_timeseries")
                          ).with_suffix(".json").read_text())
    assert sidecar["Sources"] == [run.bold.name for run in study["runs"]]
    assert [run["bold"] for run in sidecar["Runs"]] == sidecar["Sources"] and "no run- entity" in sidecar["Description"]


def test_excluded_and_outside_the_cohort_subjects_get_no_files(study, tmp_path):
    assert not (study["out"] / "sub-03").exists()
    assert study["summary"]["subjects"] == 2 and study["summary"]["skipped"] == len(ATLASES)
    participants = pd.read_csv(study["out"] / "participants.tsv", sep="\t")
    assert participants["participant_id"].tolist() == ["sub-01", "sub-02"]
    series = study["series"]["sub-01"][0] + study["series"]["sub-02"][0]
    cohort = _cohort(tmp_path / "cohort.parquet", ["sub-02"])
    export_derivatives(series, [], cohort, CONFIG, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "dataset_description.json", "participants.json", "participants.tsv", "sub-02"]


def test_dataset_description_records_the_version_and_the_config_hash(study):
    description = json.loads((study["out"] / "dataset_description.json").read_text())
    assert {"Name", "BIDSVersion", "DatasetType", "GeneratedBy"} <= set(description)
    assert description["BIDSVersion"] == "1.9.0" and description["DatasetType"] == "derivative"
    generated = description["GeneratedBy"][0]
    assert generated["Name"] == "brainage" and generated["Version"] == source_version()
    assert generated["ConfigHash"] == hashlib.sha256(json.dumps(CONFIG, sort_keys=True).encode()).hexdigest()
    assert "CodeURL" not in generated and "SourceDatasets" not in description  # the demo has none
    changed = {**CONFIG, "extract": {**CONFIG["extract"], "fd_threshold": 0.4}}
    assert dataset_description(changed)["GeneratedBy"][0]["ConfigHash"] != generated["ConfigHash"]


def test_source_datasets_name_your_derivatives_your_bids_dataset_or_the_indi_datasets(tmp_path):
    own = {**CONFIG, "inputs": {**CONFIG["inputs"], "source": "fmriprep", "derivatives": str(tmp_path)}}
    assert source_datasets(own) == [{"URL": tmp_path.resolve().as_uri()}]
    raw = {**CONFIG, "inputs": {**CONFIG["inputs"], "source": "bids", "bids_dir": str(tmp_path / "raw")}}
    assert source_datasets(raw) == [{"URL": (tmp_path / "raw").resolve().as_uri()}]
    entry = {"name": "abide_pcp", "pipeline": "cpac", "strategy": "filt_global", "derivative": "rois_cc200",
             "sites": [], "age_min": None, "age_max": None, "max_subjects": None, "qc_pass": False,
             "task": "rest", "sessions": []}
    indi = {**CONFIG, "inputs": {**CONFIG["inputs"], "source": "indi"},
            "datasets": [entry, entry | {"name": "adhd200"}]}
    assert source_datasets(indi) == [{"URL": "s3://fcp-indi/data/Projects/ABIDE_Initiative"},
                                     {"URL": "s3://fcp-indi/data/Projects/ADHD200/RawDataBIDS"}]


def test_atlases_are_written_as_bids_dseg_probseg_and_a_sphere_table(study):
    folder = study["out"] / "atlases"
    octants = folder / "atlas-octants"
    image = octants / f"atlas-octants_space-{SPACE}_dseg.nii.gz"
    assert image.read_bytes() == (study["atlases"][0] / "atlas.nii.gz").read_bytes()
    table = pd.read_csv(octants / "atlas-octants_dseg.tsv", sep="\t")
    assert list(table.columns) == ["index", "name"] and table["name"].tolist() == [f"roi_{k:03d}" for k in range(1, 10)]
    assert nib.load(folder / "atlas-blobs" / f"atlas-blobs_space-{SPACE}_probseg.nii.gz").shape == (8, 8, 8, 3)
    assert pd.read_csv(folder / "atlas-blobs" / "atlas-blobs_probseg.tsv", sep="\t")["name"].tolist() == ["a", "b", "c"]
    spheres = pd.read_csv(folder / "atlas-spheres" / "atlas-spheres_dseg.tsv", sep="\t")
    assert list(spheres.columns) == ["index", "name", "x", "y", "z", "radius_mm"] and (spheres["radius_mm"] == 6).all()
    assert sorted(p.name for p in (folder / "atlas-spheres").iterdir()) == [
        "atlas-spheres_description.json", "atlas-spheres_dseg.tsv"]
    description = json.loads((octants / "atlas-octants_description.json").read_text())
    assert description["SpatialReference"] == SPACE and description["Name"] == "octants"


def test_ready_made_pcp_series_are_named_from_the_config(tmp_path):
    rois = tmp_path / "Caltech_0051456_rois_cc200.1D"
    rng = np.random.default_rng(0)
    rows = "\n".join("\t".join(f"{v:.6f}" for v in row) for row in rng.normal(size=(50, 3)))
    rois.write_text("#1\t#2\t#3\n" + rows + "\n")
    series = tmp_path / "sub-0051456_timeseries.parquet"
    convert_pcp_rois("sub-0051456", rois, {"min_frames": 10}, series, tmp_path / "qc.json")
    export_derivatives([series], [], _cohort(tmp_path / "cohort.parquet", ["sub-0051456"]), CONFIG, tmp_path / "out")
    name = f"sub-0051456_task-rest_space-{SPACE}_seg-cc200_stat-mean_timeseries.tsv"
    tsv = tmp_path / "out" / "sub-0051456" / "func" / name
    sidecar = json.loads(tsv.with_suffix(".json").read_text())
    assert sidecar["Sources"] == [rois.name] and "RepetitionTime" not in sidecar
    assert "repetition time was not recorded" in sidecar["Description"]


def test_series_entities_of_files_without_bids_names_come_from_the_config():
    assert series_entities("sub-0051456", "Caltech_0051456_func_preproc.nii.gz", task="rest", space="MNI") == {
        "sub": "0051456", "task": "rest", "space": "MNI"}
    bold = "sub-9_ses-1_task-rest_acq-mb_dir-AP_run-02_space-T1w_desc-preproc_bold.nii.gz"
    assert series_entities("sub-9", bold, task="x", space="MNI") == {
        "sub": "9", "ses": "1", "task": "rest", "acq": "mb", "dir": "AP", "run": "02", "space": "T1w"}


def test_volumes_nifti_round_trips_to_the_parquet_volumes(study, tmp_path):
    path = study["series"]["sub-01"][1]
    volumes = storage.read_volumes(path)
    assert main(["volumes", "--volumes", str(path), "--out", str(tmp_path / "v.nii.gz")]) == 0
    image = nib.load(tmp_path / "v.nii.gz")
    data = image.get_fdata(dtype=np.float32)
    assert image.get_data_dtype() == np.float32 and data.shape == (*volumes.mask.shape, volumes.data.shape[0])
    np.testing.assert_array_equal(np.moveaxis(data, -1, 0)[:, volumes.mask], volumes.data.astype(np.float32))
    assert not data[~volumes.mask].any()
    np.testing.assert_allclose(image.affine, volumes.affine, rtol=0, atol=1e-6)
    assert image.header.get_zooms()[3] == 2.0


def test_volumes_of_an_excluded_subject_are_an_error(study, tmp_path):
    with pytest.raises(InputDataError, match=r"sub-03_volumes.parquet: no frames to export \(sub-03 was excluded"):
        export_volumes(study["series"]["sub-03"][1], tmp_path / "v.nii.gz")
    assert not (tmp_path / "v.nii.gz").exists()


def test_cli_writes_the_derivatives_and_fails_with_one_line(study, tmp_path, capsys):
    series = [str(p) for p in study["series"]["sub-01"][0]]
    args = ["derivatives", "--series", *series, "--atlases", *map(str, study["atlases"]),
            "--cohort", str(_cohort(tmp_path / "c.parquet", ["sub-01"])), "--config", json.dumps(CONFIG)]
    assert main([*args, "--out-dir", str(tmp_path / "out")]) == 0
    assert len(list((tmp_path / "out" / "sub-01").rglob("*.tsv"))) == 2 * len(ATLASES)
    assert main([*args[:-2], "--config", "{}", "--out-dir", str(tmp_path / "bad")]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and errors[0].endswith("config: no inputs (expected the resolved workflow config)")


def test_a_cohort_subject_without_frames_or_series_is_an_error(study, tmp_path):
    excluded = study["series"]["sub-03"][0]
    with pytest.raises(InputDataError, match=r"sub-03 is in the cohort but its series has no frames \(excluded at"):
        export_derivatives(excluded, [], _cohort(tmp_path / "c.parquet", ["sub-03"]), CONFIG, tmp_path / "a")
    cohort = _cohort(tmp_path / "c2.parquet", ["sub-01", "sub-02"])
    missing = r"c2.parquet: cohort subjects without a series among the inputs: \['sub-02'\]"
    with pytest.raises(InputDataError, match=missing):
        export_derivatives(study["series"]["sub-01"][0], [], cohort, CONFIG, tmp_path / "b")


def test_two_series_of_one_subject_and_atlas_are_an_error(study, tmp_path):
    first = study["series"]["sub-01"][0][0]
    copy = tmp_path / "copy.parquet"
    copy.write_bytes(first.read_bytes())
    with pytest.raises(InputDataError, match=r"copy.parquet: a second series of sub-01 for atlas octants \(first: "):
        export_derivatives([first, copy], [], _cohort(tmp_path / "c.parquet", ["sub-01"]), CONFIG, tmp_path / "a")


def test_a_series_without_an_atlas_is_an_error(tmp_path):
    path = tmp_path / "s.parquet"
    storage.write_timeseries(path, np.zeros((5, 1)), ["a"], participant_id="sub-01", provenance={"frames": [0]})
    with pytest.raises(InputDataError, match=r"s.parquet: the series names no atlas"):
        export_derivatives([path], [], _cohort(tmp_path / "c.parquet", ["sub-01"]), CONFIG, tmp_path / "a")


def test_tsv_writers_check_shapes(tmp_path):
    with pytest.raises(ValueError, match=r"t.tsv: data shape \(2, 3\) does not match 2 region labels"):
        write_timeseries_tsv(tmp_path / "t.tsv", np.zeros((2, 3)), ["a", "b"])
    with pytest.raises(ValueError, match=r"r.tsv: matrix shape \(2, 3\) is not \(2, 2\)"):
        write_relmat_tsv(tmp_path / "r.tsv", np.zeros((2, 3)), ["a", "b"])
    assert not list(tmp_path.iterdir())


def test_missing_config_keys_are_named():
    with pytest.raises(ConfigError, match=r"config: no indi.bucket"):
        source_datasets({"inputs": {"source": "indi"}, "indi": {}})
