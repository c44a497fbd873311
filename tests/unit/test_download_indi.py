"""brainage.download.indi / phenotypes: layouts, phenotype normalisation, selection, subject keys."""

import csv
import logging

import numpy as np
import pandas as pd
import pytest
from indi_layouts import PREFIXES, listing, write_raw_bids

from brainage.download import indi
from brainage.errors import ConfigError, InputDataError

ABIDE = "data/Projects/ABIDE_Initiative"
PHENO_KEY = f"{ABIDE}/Phenotypic_V1_0b_preprocessed1.csv"


def entry(name="abide_pcp", **overrides):
    base = dict(name=name, pipeline="cpac", strategy="filt_global", derivative="rois_cc200", sites=[],
                age_min=None, age_max=None, max_subjects=None, qc_pass=False, task="rest", sessions=[])
    return {**base, **overrides}


def plain(df):
    """Values with every missing marker as None (pandas NA flavours differ by dtype)."""
    return df.astype(object).where(df.notna(), None).reset_index(drop=True)


# ---------------------------------------------------------------- entries and layouts


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"name": "abide2"}, "name 'abide2' is not one of"),
        ({"pipeline": "fsl"}, r"pipeline: 'fsl' is not one of \['cpac'"),
        ({"strategy": "global"}, "strategy: 'global'"),
        ({"derivative": "alff"}, r"derivative: 'alff' is not one of \['func_preproc', 'rois_aal'"),
        ({"task": "re-st"}, "'re-st' is not a BIDS label"),
        ({"sessions": ["ses_1"]}, "'ses_1' is not a BIDS label"),
        ({"age_min": 30, "age_max": 20}, "age_min 30 is greater than age_max 20"),
        ({"max_subjects": 0}, r"max_subjects: 0 is below 1"),
    ],
)
def test_validate_entry_rejects_bad_values(overrides, match):
    with pytest.raises(ConfigError, match=match):
        indi.validate_entry(entry(**overrides))


def test_validate_entry_names_missing_keys():
    with pytest.raises(ConfigError, match=r"lacks keys \['qc_pass'\]"):
        indi.validate_entry({k: v for k, v in entry().items() if k != "qc_pass"})


def test_prefixes_and_raw_bids_flags():
    assert indi.dataset_prefix(entry()) == ABIDE
    assert [indi.dataset_prefix(entry(n)) for n in PREFIXES] == list(PREFIXES.values())
    assert [indi.is_raw_bids(entry(n)) for n in indi.DATASETS] == [False, True, True, True]


def test_phenotype_keys_abide_is_the_fixed_csv():
    assert indi.phenotype_keys(entry(), []) == [PHENO_KEY]


def test_phenotype_keys_finds_site_tables_and_sessions_only():
    p = PREFIXES["corr"]
    keys = [f"{p}/BMB_1/participants.tsv", f"{p}/IPCAS_1/participants.tsv", f"{p}/BMB_1/sub-01/sub-01_sessions.tsv",
            f"{p}/participants.tsv",  # not a site's BIDS root
            f"{p}/BMB_1/sub-01/ses-1/sub-01_ses-1_scans.tsv", f"{p}/BMB_1/sub-02/sub-01_sessions.tsv",
            "data/Projects/Other/BMB_1/participants.tsv"]
    assert indi.phenotype_keys(entry("corr"), keys) == sorted(keys[:3])
    nki = PREFIXES["nki_rs"]
    assert indi.phenotype_keys(entry("nki_rs"), [f"{nki}/participants.tsv", f"{nki}/X/participants.tsv"]) == [
        f"{nki}/participants.tsv"
    ]


def test_phenotype_keys_without_participants_table_is_an_error():
    with pytest.raises(ConfigError, match=r"no participants.tsv under data/Projects/ADHD200/RawDataBIDS/<site>/"):
        indi.phenotype_keys(entry("adhd200"), [f"{PREFIXES['adhd200']}/KKI/T1w.json"])


# ---------------------------------------------------------------- ABIDE phenotypes


def test_abide_real_phenotypes_match_the_shared_participants(shared_data):
    folder = shared_data / "abide1_pcp_cpac_filtglobal_cc200"
    csv_path = folder / "Phenotypic_V1_0b_preprocessed1.csv"
    manifest, excluded = indi.normalise_phenotypes(entry(), {PHENO_KEY: csv_path})
    truth = pd.read_csv(folder / "participants.tsv", sep="\t")
    assert len(manifest) == len(truth) == 831
    got = manifest.set_index("participant_id").loc[truth["participant_id"]]
    assert list(manifest.columns[:7]) == list(indi.MANIFEST_COLUMNS)
    np.testing.assert_array_equal(got["age"].to_numpy(), truth["age"].to_numpy())
    for mine, theirs in [("sex", "sex"), ("site", "site"), ("diagnosis", "dx_group"), ("source_id", "file_id")]:
        assert got[mine].tolist() == truth[theirs].tolist(), mine
    np.testing.assert_allclose(got["func_mean_fd"], truth["func_mean_fd"], atol=5e-5)  # tsv rounded to 4 dp
    with csv_path.open(newline="") as handle:
        no_file = {f"sub-{int(r['SUB_ID']):07d}" for r in csv.DictReader(handle) if r["FILE_ID"] == "no_filename"}
    assert len(no_file) == 72 and set(excluded["participant_id"]) == no_file
    assert (excluded["stage"] == "download").all()
    assert excluded["reason"].str.fullmatch(rf"no preprocessed data in ABIDE PCP \(FILE_ID no_filename\) in {csv_path}").all()


def test_abide_qc_pass_on_real_data_keeps_subjects_all_functional_raters_passed(shared_data):
    csv_path = shared_data / "abide1_pcp_cpac_filtglobal_cc200" / "Phenotypic_V1_0b_preprocessed1.csv"
    manifest, _ = indi.normalise_phenotypes(entry(), {PHENO_KEY: csv_path})
    with csv_path.open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["FILE_ID"] != "no_filename"]
    passed = {f"sub-{int(r['SUB_ID']):07d}" for r in rows
              if r["qc_rater_1"] == r["qc_func_rater_2"] == r["qc_func_rater_3"] == "OK"}
    selected, excluded = indi.select(entry(qc_pass=True), manifest, seed=0)
    assert set(selected["participant_id"]) == passed
    assert len(excluded) == 831 - len(passed)
    assert excluded["reason"].str.startswith("PCP functional QC not passed: ").all()


ABIDE_HEADER = "SUB_ID,SITE_ID,FILE_ID,DX_GROUP,AGE_AT_SCAN,SEX,func_mean_fd,qc_rater_1,qc_notes_rater_1,qc_func_rater_2,qc_func_rater_3\n"


def _abide_csv(tmp_path, body, header=ABIDE_HEADER):
    path = tmp_path / "Phenotypic_V1_0b_preprocessed1.csv"
    path.write_text(header + body)
    return path


def test_abide_rows_without_usable_data_are_exclusions_naming_file_and_row(tmp_path, caplog):
    path = _abide_csv(tmp_path, (
        '50001,PITT,Pitt_0050001,1,12.5,1,0.1,OK,"ic, parietal",OK,OK\n'
        "50002,PITT,Pitt_0050002,2,abc,2,0.1,OK,,OK,OK\n"
        "50003,PITT,Pitt_0050003,2,,2,0.1,OK,,OK,OK\n"
        "50004,PITT,Pitt_0050004,2,150,2,0.1,OK,,OK,OK\n"
        "50005,PITT,no_filename,2,20,2,0.1,OK,,OK,OK\n"
        "50006,NYU,NYU_0050006,3,30,3,0.2,OK,,OK,OK\n"
    ))
    with caplog.at_level(logging.WARNING):
        manifest, excluded = indi.normalise_phenotypes(entry(), {PHENO_KEY: path})
    assert manifest["participant_id"].tolist() == ["sub-0050001", "sub-0050006"]
    assert plain(manifest[["sex", "diagnosis", "age"]]).values.tolist() == [["M", "ASD", 12.5], [None, None, 30.0]]
    assert "SEX codes ['3']" in caplog.text and "DX_GROUP codes ['3']" in caplog.text
    assert excluded["reason"].tolist() == [
        f"age 'abc' is not a number in {path} row 2",
        f"no age in {path} row 3",
        f"age 150 is outside [0, 120] years in {path} row 4",
        f"no preprocessed data in ABIDE PCP (FILE_ID no_filename) in {path}",
    ]


@pytest.mark.parametrize(
    ("header", "body", "match"),
    [
        (ABIDE_HEADER.replace("AGE_AT_SCAN,", ""), "50001,PITT,Pitt_0050001,1,1,0.1,OK,,OK,OK\n", "lacks columns.*AGE_AT_SCAN"),
        (ABIDE_HEADER, "x1,PITT,P_1,1,12,1,0.1,OK,,OK,OK\n", r"SUB_ID is not an integer in rows \[1\]"),
        (ABIDE_HEADER, "50001,PITT,P_1,1,12,1,0.1,OK,,OK,OK\n50001,PITT,P_2,1,12,1,0.1,OK,,OK,OK\n", r"duplicated participant ids \['sub-0050001'\]"),
        ("", "", "unreadable phenotype table"),
    ],
)
def test_abide_file_level_problems_raise(tmp_path, header, body, match):
    path = _abide_csv(tmp_path, body, header)
    with pytest.raises(InputDataError, match=match):
        indi.normalise_phenotypes(entry(), {PHENO_KEY: path})


def test_abide_expects_exactly_its_phenotype_file(tmp_path):
    with pytest.raises(InputDataError, match="expected one Phenotypic_V1_0b_preprocessed1.csv"):
        indi.normalise_phenotypes(entry(), {f"{ABIDE}/other.csv": tmp_path / "other.csv"})


# ---------------------------------------------------------------- raw BIDS phenotypes


def _normalise(root, name, **overrides):
    e = entry(name, **overrides)
    keys = indi.phenotype_keys(e, listing(root))
    return indi.normalise_phenotypes(e, {k: root / k for k in keys})


@pytest.mark.parametrize("name", ["adhd200", "nki_rs", "corr"])
def test_raw_bids_phenotypes_in_their_real_format(tmp_path, name):
    expected = write_raw_bids(tmp_path, name, n_subjects=5, seed=3)
    manifest, excluded = _normalise(tmp_path, name)
    assert excluded.empty
    assert list(manifest.columns) == [*indi.MANIFEST_COLUMNS, "session"]
    pd.testing.assert_frame_equal(plain(manifest), plain(expected))


def test_adhd200_identical_duplicates_are_dropped_and_conflicting_ones_excluded(tmp_path):
    write_raw_bids(tmp_path, "adhd200", n_subjects=4, seed=0)
    table = tmp_path / PREFIXES["adhd200"] / "KKI" / "participants.tsv"
    first = table.read_bytes().decode("latin-1").splitlines()[1].split("\t")
    conflicting = "\t".join([first[0], first[1], "99.5", *first[3:]])
    table.write_bytes(table.read_bytes() + (conflicting + "\n").encode("latin-1"))
    manifest, excluded = _normalise(tmp_path, "adhd200")
    assert f"sub-{first[0]}" not in set(manifest["participant_id"]) and len(manifest) == 3
    assert excluded["reason"].tolist() == [f"conflicting phenotype rows: {table} row 1, {table} row 3"]


def test_adhd200_missing_code_and_bad_age_are_exclusions(tmp_path):
    write_raw_bids(tmp_path, "adhd200", n_subjects=2, seed=0)
    table = tmp_path / PREFIXES["adhd200"] / "KKI" / "participants.tsv"
    lines = table.read_text(encoding="latin-1").splitlines()
    lines.append("1018999\tMale\t-999\tRight\tADHD-Combined\tx\t-999")
    lines.append("1019000\tFemale\tten\tRight\tpending\tx\t-999")
    table.write_text("\n".join(lines) + "\n", encoding="latin-1")
    manifest, excluded = _normalise(tmp_path, "adhd200")
    assert len(manifest) == 2
    assert excluded["reason"].tolist() == [f"no age in {table} row 2", f"age 'ten' is not a number in {table} row 3"]


def test_corr_age_comes_from_the_selected_session(tmp_path):
    expected = write_raw_bids(tmp_path, "corr", n_subjects=3, seed=1)
    manifest, _ = _normalise(tmp_path, "corr", sessions=["ses-2"])
    np.testing.assert_allclose(manifest["age"], expected["age"] + 0.5)
    assert manifest["session"].tolist() == ["2", "2", "2"]


def test_participants_table_with_session_rows_gives_session_ages(tmp_path):
    key = f"{PREFIXES['nki_rs']}/participants.tsv"
    path = tmp_path / "participants.tsv"
    path.write_text("participant_id\tsession_id\tage\tsex\nsub-A1\tses-BAS1\t30\tFEMALE\nsub-A1\tses-FLU1\t32\tFEMALE\n")
    manifest, _ = indi.normalise_phenotypes(entry("nki_rs"), {key: path})
    assert plain(manifest[["participant_id", "age", "sex", "session"]]).values.tolist() == [["sub-A1", 30.0, "F", "BAS1"]]
    manifest, _ = indi.normalise_phenotypes(entry("nki_rs", sessions=["FLU1"]), {key: path})
    assert manifest["age"].tolist() == [32.0] and manifest["session"].tolist() == ["FLU1"]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("subject\tage\nA1\t20\n", r"lacks columns \['participant_id'\]"),
        ("participant_id\tsex\nA1\tMALE\n", r"no age column \(expected one of \['age', 'age_at_scan'\]"),
        ("participant_id\tage\nA-1\t20\n", "participant id 'A-1' is not a BIDS label"),
    ],
)
def test_raw_bids_file_level_problems_raise(tmp_path, text, match):
    path = tmp_path / "participants.tsv"
    path.write_text(text)
    with pytest.raises(InputDataError, match=match):
        indi.normalise_phenotypes(entry("nki_rs"), {f"{PREFIXES['nki_rs']}/participants.tsv": path})


def test_raw_bids_rejects_unexpected_files_and_sessions_without_session_id(tmp_path):
    (tmp_path / "participants.tsv").write_text("participant_id\tage\n01\t20\n")
    (tmp_path / "s.tsv").write_text("visit\tage\n1\t20\n")
    people = {f"{PREFIXES['corr']}/BMB_1/participants.tsv": tmp_path / "participants.tsv"}
    with pytest.raises(InputDataError, match="expected participants.tsv"):
        indi.normalise_phenotypes(entry("corr"), {**people, "x/phenotype.csv": tmp_path / "s.tsv"})
    sessions = {f"{PREFIXES['corr']}/BMB_1/sub-0000001/sub-0000001_sessions.tsv": tmp_path / "s.tsv"}
    with pytest.raises(InputDataError, match=r"sessions table lacks columns \['session_id'\]"):
        indi.normalise_phenotypes(entry("corr"), {**people, **sessions})


# ---------------------------------------------------------------- selection


def _manifest(n=10):
    return pd.DataFrame({
        "participant_id": [f"sub-{i:02d}" for i in range(n)], "dataset": "abide_pcp",
        "site": (["A"] * 4 + ["B"] * 3 + ["C"] * 3)[:n], "age": 10.0 + 5 * np.arange(n),
        "sex": "M", "diagnosis": "TD", "source_id": [f"S_{i}" for i in range(n)],
    })


def test_select_filters_sites_then_ages_inclusively(caplog):
    with caplog.at_level(logging.INFO):
        selected, excluded = indi.select(entry(sites=["A", "C"], age_min=15, age_max=45), _manifest(), seed=0)
    # ages 10..55: A = 10,15,20,25; C = 45,50,55 -> [15, 45] keeps 15, 20, 25, 45
    assert selected["participant_id"].tolist() == ["sub-01", "sub-02", "sub-03", "sub-07"]
    assert excluded.empty and list(excluded.columns) == ["participant_id", "stage", "reason"]
    assert "sites ['A', 'C']: kept 7 of 10" in caplog.text and "age >= 15: kept 6 of 7" in caplog.text


def test_select_unknown_site_lists_the_available_ones():
    with pytest.raises(ConfigError, match=r"unknown sites \['Z'\]; available: \['A', 'B', 'C'\]"):
        indi.select(entry(sites=["A", "Z"]), _manifest(), seed=0)


def test_select_nothing_left_is_a_config_error():
    with pytest.raises(ConfigError, match="no participant left after the site and age filters"):
        indi.select(entry(age_min=100), _manifest(), seed=0)


def test_select_qc_pass_only_for_abide():
    with pytest.raises(ConfigError, match=r"datasets\[corr\].qc_pass: only abide_pcp"):
        indi.select(entry("corr", qc_pass=True), _manifest().assign(dataset="corr"), seed=0)


def test_select_exclude_by_name_keeps_the_sample_and_records_the_reason():
    plain, _ = indi.select(entry(max_subjects=5), _manifest(), seed=3)
    reason = "fMRIPrep fails: T1w ringing artefact"
    first = plain["participant_id"].iloc[1]
    # With and without "sub-"; an excluded id outside the sample changes nothing.
    outside = next(p for p in _manifest()["participant_id"] if p not in set(plain["participant_id"]))
    selected, excluded = indi.select(entry(max_subjects=5, exclude={first.removeprefix("sub-"): reason,
                                                                    outside: "not sampled"}), _manifest(), seed=3)
    assert selected["participant_id"].tolist() == [p for p in plain["participant_id"] if p != first]
    assert excluded.values.tolist() == [[first, "download", f"excluded in the config (datasets[abide_pcp].exclude): {reason}"]]
    with pytest.raises(ConfigError, match=r"datasets\[abide_pcp\].exclude: \['sub-77'\] not in the dataset's phenotype table"):
        indi.select(entry(exclude={"sub-77": "typo"}), _manifest(), seed=0)


def test_select_qc_failures_are_exclusions_naming_rater_and_value():
    manifest = _manifest(5).assign(qc_rater_1="OK", qc_func_rater_2=["OK", "maybe", "OK", "OK", "OK"],
                                   qc_func_rater_3=["OK", "OK", None, "OK", "fail"])
    selected, excluded = indi.select(entry(qc_pass=True), manifest, seed=0)
    assert selected["participant_id"].tolist() == ["sub-00", "sub-03"]
    assert excluded.values.tolist() == [
        ["sub-01", "download", "PCP functional QC not passed: qc_func_rater_2='maybe'"],
        ["sub-02", "download", "PCP functional QC not passed: qc_func_rater_3='missing'"],
        ["sub-04", "download", "PCP functional QC not passed: qc_func_rater_3='fail'"],
    ]
    with pytest.raises(InputDataError, match="lacks columns"):
        indi.select(entry(qc_pass=True), _manifest(), seed=0)


def test_select_max_subjects_is_a_reproducible_sorted_sample():
    manifest = _manifest()
    first, _ = indi.select(entry(max_subjects=4), manifest, seed=7)
    shuffled, _ = indi.select(entry(max_subjects=4), manifest.sample(frac=1, random_state=1), seed=7)
    assert len(first) == 4 and first["participant_id"].is_monotonic_increasing
    assert first["participant_id"].tolist() == shuffled["participant_id"].tolist()
    others = {tuple(indi.select(entry(max_subjects=4), manifest, seed=s)[0]["participant_id"]) for s in range(8)}
    assert len(others) > 1  # the seed matters
    assert len(indi.select(entry(max_subjects=50), manifest, seed=7)[0]) == 10


# ---------------------------------------------------------------- subject keys


def test_abide_keys_are_computed_from_file_ids():
    selected = _manifest(2)
    keys, excluded = indi.subject_keys(entry(pipeline="dparsf", strategy="nofilt_noglobal"), selected, [])
    base = f"{ABIDE}/Outputs/dparsf/nofilt_noglobal"
    assert keys.values.tolist() == [["sub-00", "series", f"{base}/rois_cc200/S_0_rois_cc200.1D"],
                                    ["sub-01", "series", f"{base}/rois_cc200/S_1_rois_cc200.1D"]]
    assert excluded.empty
    keys, _ = indi.subject_keys(entry(derivative="func_preproc"), selected.head(1), [])
    assert keys.values.tolist() == [
        ["sub-00", "bold", f"{ABIDE}/Outputs/cpac/filt_global/func_preproc/S_0_func_preproc.nii.gz"],
        ["sub-00", "mask", f"{ABIDE}/Outputs/cpac/filt_global/func_mask/S_0_func_mask.nii.gz"],
    ]
    with pytest.raises(ConfigError, match="sub-00 has no FILE_ID"):
        indi.subject_keys(entry(), selected.assign(source_id="no_filename"), [])


def test_raw_bids_keys_follow_bids_inheritance():
    p = PREFIXES["adhd200"]
    sub = f"{p}/KKI/sub-1/ses-1"
    bold = f"{sub}/func/sub-1_ses-1_task-rest_acq-2_run-1_bold.nii.gz"
    applies = [f"{p}/KKI/task-rest_acq-2_bold.json", f"{p}/KKI/sub-1/sub-1_task-rest_bold.json",
               f"{sub}/func/sub-1_ses-1_task-rest_acq-2_run-1_bold.json"]
    ignored = [f"{p}/KKI/task-rest_acq-1_bold.json", f"{p}/KKI/task-nback_bold.json", f"{p}/KKI/T2w.json",
               f"{p}/KKI2/T1w.json", f"{sub}/func/sub-1_ses-1_task-nback_bold.nii.gz", f"{sub}/anat/sub-1_ses-1_T2w.nii.gz"]
    listed = [bold, f"{sub}/anat/sub-1_ses-1_T1w.nii.gz", f"{p}/KKI/T1w.json", f"{p}/KKI/dataset_description.json", *applies, *ignored]
    selected = pd.DataFrame({"participant_id": ["sub-1"], "site": ["KKI"]})
    keys, excluded = indi.subject_keys(entry("adhd200"), selected, listed)
    assert excluded.empty
    assert sorted(map(tuple, keys[["kind", "key"]].values.tolist())) == sorted([
        ("anat", f"{sub}/anat/sub-1_ses-1_T1w.nii.gz"), ("sidecar", f"{p}/KKI/T1w.json"), ("bold", bold),
        *(("sidecar", k) for k in applies), ("description", f"{p}/KKI/dataset_description.json"),
    ])


@pytest.mark.parametrize("name", ["adhd200", "nki_rs", "corr"])
def test_raw_bids_keys_exist_in_the_written_tree(tmp_path, name):
    write_raw_bids(tmp_path, name, n_subjects=4, seed=0)
    manifest, _ = _normalise(tmp_path, name)
    keys, excluded = indi.subject_keys(entry(name), manifest, listing(tmp_path))
    assert excluded.empty and set(keys["participant_id"]) == set(manifest["participant_id"])
    assert all((tmp_path / k).is_file() for k in keys["key"])
    per_subject = keys.groupby("participant_id")["kind"].value_counts().unstack()
    assert (per_subject["anat"] == 1).all() and (per_subject["description"] == 1).all()
    runs = {"adhd200": 1, "nki_rs": 1, "corr": 2}[name]  # corr: 2 runs of session 1 only (the age's session)
    # T1w + bold sidecars: per file (nki_rs) or one site-level file per kind, shared by the runs
    assert (per_subject["bold"] == runs).all() and (per_subject["sidecar"] == 2).all()
    assert not keys["key"].str.contains("BREATHHOLD").any()


def test_raw_bids_task_and_session_choose_the_runs(tmp_path):
    write_raw_bids(tmp_path, "nki_rs", n_subjects=1, seed=0)
    manifest, _ = _normalise(tmp_path, "nki_rs")
    keys, _ = indi.subject_keys(entry("nki_rs", task="BREATHHOLD"), manifest, listing(tmp_path))
    assert keys.loc[keys["kind"] == "bold", "key"].str.contains("task-BREATHHOLD_acq-1400_bold").tolist() == [True]
    write_raw_bids(tmp_path, "corr", n_subjects=1, seed=0)
    corr, _ = _normalise(tmp_path, "corr")
    keys, _ = indi.subject_keys(entry("corr", sessions=["2"]), corr.drop(columns="session"), listing(tmp_path))
    assert keys.loc[keys["kind"] == "bold", "key"].str.contains("/ses-2/func/").tolist() == [True, True]


def test_raw_bids_subjects_without_bold_or_t1w_are_exclusions(tmp_path):
    write_raw_bids(tmp_path, "adhd200", n_subjects=3, seed=0)
    manifest, _ = _normalise(tmp_path, "adhd200")
    no_bold, no_t1w = manifest["participant_id"].iloc[0], manifest["participant_id"].iloc[1]
    listed = [k for k in listing(tmp_path) if not (f"/{no_bold}/" in k and "/func/" in k)
              and not (f"/{no_t1w}/" in k and "/anat/" in k)]
    keys, excluded = indi.subject_keys(entry("adhd200"), manifest, listed)
    site = manifest["site"].iloc[0]
    assert excluded.values.tolist() == [
        [no_bold, "download", f"no BOLD run of task-rest under {PREFIXES['adhd200']}/{site}/{no_bold}/ in the bucket listing"],
        [no_t1w, "download", f"no T1w image under {PREFIXES['adhd200']}/{manifest['site'].iloc[1]}/{no_t1w}/ in the bucket listing (fMRIPrep needs one)"],
    ]
    assert set(keys["participant_id"]) == {manifest["participant_id"].iloc[2]}
