"""brainage.participants.merge: one manifest and one exclusions table from per-dataset ones."""

import pandas as pd
import pytest

from brainage.errors import InputDataError
from brainage.participants.__main__ import main
from brainage.participants.merge import merge_manifests

HEADER = "participant_id\tdataset\tsite\tage\tsex\tdiagnosis\tsource_id"


def _write(path, header, *rows):
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def _read(path):
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)


@pytest.fixture
def inputs(tmp_path):
    abide = _write(tmp_path / "abide.tsv", HEADER + "\tfunc_mean_fd\tqc_rater_1",
                   "sub-0050003\tabide_pcp\tPITT\t24.4500\tM\tASD\tPitt_0050003\t0.3221\tOK")
    corr = _write(tmp_path / "corr.tsv", HEADER + "\tsession",
                  "sub-0003001\tcorr\tBMB_1\t30.5\tF\tn/a\t0003001\t1",
                  "sub-0003002\tcorr\tBMB_1\t41\tn/a\tn/a\t0003002\t2")
    ex_abide = _write(tmp_path / "ex_abide.tsv", "participant_id\tstage\treason",
                      "sub-0050002\tdownload\tno preprocessed data in ABIDE PCP (FILE_ID no_filename) in x.csv")
    ex_corr = _write(tmp_path / "ex_corr.tsv", "participant_id\tstage\treason\textra", "sub-0003009\tdownload\tno BOLD\tz")
    return [abide, corr], [ex_abide, ex_corr]


def test_merge_concatenates_with_manifest_columns_first_and_text_kept(tmp_path, inputs):
    manifests, exclusions = inputs
    merge_manifests(manifests, exclusions, tmp_path / "m.tsv", tmp_path / "e.tsv")
    merged = _read(tmp_path / "m.tsv")
    assert list(merged.columns) == [*HEADER.split("\t"), "func_mean_fd", "qc_rater_1", "session"]
    assert merged.values.tolist() == [
        ["sub-0050003", "abide_pcp", "PITT", "24.4500", "M", "ASD", "Pitt_0050003", "0.3221", "OK", "n/a"],
        ["sub-0003001", "corr", "BMB_1", "30.5", "F", "n/a", "0003001", "n/a", "n/a", "1"],
        ["sub-0003002", "corr", "BMB_1", "41", "n/a", "n/a", "0003002", "n/a", "n/a", "2"],
    ]
    excluded = _read(tmp_path / "e.tsv")
    assert excluded.values.tolist() == [
        ["sub-0050002", "download", "no preprocessed data in ABIDE PCP (FILE_ID no_filename) in x.csv"],
        ["sub-0003009", "download", "no BOLD"],
    ]


def test_merge_rejects_an_id_in_two_datasets_naming_both(tmp_path, inputs):
    manifests, exclusions = inputs
    clash = _write(tmp_path / "adhd.tsv", HEADER, "sub-0003001\tadhd200\tKKI\t10\tM\tTD\t3001")
    with pytest.raises(InputDataError, match=r"sub-0003001 is in two datasets: corr \(.*corr.tsv\) and adhd200 \(.*adhd.tsv\)"):
        merge_manifests([*manifests, clash], exclusions, tmp_path / "m.tsv", tmp_path / "e.tsv")
    assert not (tmp_path / "m.tsv").exists()


def test_merge_requires_columns_and_at_least_one_participant(tmp_path, inputs):
    manifests, exclusions = inputs
    bad = _write(tmp_path / "bad.tsv", "participant_id\tdataset\tsite\tage\tsex", "sub-1\tx\tA\t1\tM")
    with pytest.raises(InputDataError, match=r"bad.tsv: manifest lacks columns \['diagnosis', 'source_id'\]"):
        merge_manifests([bad], [], tmp_path / "m.tsv", tmp_path / "e.tsv")
    bad_ex = _write(tmp_path / "bad_ex.tsv", "participant_id\treason", "sub-1\tx")
    with pytest.raises(InputDataError, match=r"bad_ex.tsv: exclusions table lacks columns \['stage'\]"):
        merge_manifests(manifests, [bad_ex], tmp_path / "m.tsv", tmp_path / "e.tsv")
    empty = _write(tmp_path / "empty.tsv", HEADER)
    with pytest.raises(InputDataError, match="no participant in any manifest"):
        merge_manifests([empty, empty], exclusions, tmp_path / "m.tsv", tmp_path / "e.tsv")


def test_merge_cli(tmp_path, inputs):
    manifests, exclusions = inputs
    argv = ["merge", "--manifests", *map(str, manifests), "--exclusions", *map(str, exclusions),
            "--out", str(tmp_path / "m.tsv"), "--exclusions-out", str(tmp_path / "e.tsv")]
    assert main(argv) == 0
    assert len(_read(tmp_path / "m.tsv")) == 3 and len(_read(tmp_path / "e.tsv")) == 2
    assert main([*argv[:2], str(manifests[1]), str(manifests[1]), *argv[3:]]) == 1  # duplicated ids
