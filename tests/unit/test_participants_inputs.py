"""brainage.participants.inputs: every input file present, and the subject's own (symlinks allowed)."""

import os

import pandas as pd
import pytest

from brainage.errors import ConfigError
from brainage.participants import build_manifest
from brainage.participants.__main__ import main
from brainage.participants.inputs import input_problems

HEADER = "participant_id\tage\tsex\tsite\n"
FUNC = "deriv/sub-{subject}/func/sub-{subject}_task-rest"
KINDS = {
    "bold": "_desc-preproc_bold.nii.gz",
    "sidecar": "_desc-preproc_bold.json",
    "mask": "_desc-brain_mask.nii.gz",
    "confounds": "_desc-confounds_timeseries.tsv",
}


def _templates(root):
    return {kind: str(root / (FUNC + suffix)) for kind, suffix in KINDS.items()}


def _path(root, kind, label):
    return root / (FUNC + KINDS[kind]).replace("{subject}", label)


def _study(root, labels, skip=()):
    """participants.tsv and every input file of each label (distinct contents), except the (label, kind)s in skip."""
    for label in labels:
        for kind in KINDS:
            if (label, kind) not in skip:
                path = _path(root, kind, label)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(f"{kind} of sub-{label}")
    participants = root / "participants.tsv"
    participants.write_text(HEADER + "".join(f"sub-{x}\t{20 + i}\tF\tA\n" for i, x in enumerate(labels)))
    return participants


def _annex(root, path, key):
    """Move ``path`` into a git-annex object store (hash-named) and leave a relative symlink in its place."""
    target = root / ".git" / "annex" / "objects" / "Xk" / "3q" / key / key
    target.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.replace(target)
    path.symlink_to(os.path.relpath(target, path.parent))
    return target


def _run(root, participants):
    t = _templates(root)
    out, excl = root / "manifest.tsv", root / "excl.tsv"
    build_manifest(participants, "demo", t["bold"], out, excl,
                   input_templates=[t["sidecar"], t["mask"], t["confounds"]])
    manifest = pd.read_csv(out, sep="\t", dtype=str)
    exclusions = pd.read_csv(excl, sep="\t", dtype=str).set_index("participant_id")
    return manifest["participant_id"].tolist(), exclusions


def test_each_missing_input_file_is_an_exclusion_naming_it(tmp_path):
    participants = _study(tmp_path, ["01", "02", "03", "04", "05"], skip=[
        ("02", "mask"), ("03", "confounds"), ("04", "sidecar"), ("05", "bold"), ("05", "mask")])
    kept, exclusions = _run(tmp_path, participants)
    assert kept == ["sub-01"]
    assert set(exclusions["stage"]) == {"participants"}
    assert exclusions.loc["sub-02", "reason"] == f"missing input file: {_path(tmp_path, 'mask', '02')}"
    assert exclusions.loc["sub-03", "reason"] == f"missing input file: {_path(tmp_path, 'confounds', '03')}"
    assert exclusions.loc["sub-04", "reason"] == f"missing input file: {_path(tmp_path, 'sidecar', '04')}"
    # Every missing file is named, the BOLD first.
    assert exclusions.loc["sub-05", "reason"] == (f"no preprocessed BOLD: {_path(tmp_path, 'bold', '05')}; "
                                                  f"missing input file: {_path(tmp_path, 'mask', '05')}")


def test_annex_symlinks_with_hash_names_are_kept(tmp_path):
    participants = _study(tmp_path, ["01", "02"])
    for kind in KINDS:
        _annex(tmp_path, _path(tmp_path, kind, "01"), f"SHA256E-s42--{kind}01abcdef.nii.gz")
    assert _path(tmp_path, "bold", "01").is_symlink()
    kept, exclusions = _run(tmp_path, participants)
    assert kept == ["sub-01", "sub-02"] and exclusions.empty


def test_a_symlink_whose_annex_content_is_absent_is_missing_and_says_so(tmp_path):
    participants = _study(tmp_path, ["01", "02"])
    target = _annex(tmp_path, _path(tmp_path, "mask", "02"), "SHA256E-s42--dropped.nii.gz")
    target.unlink()  # `datalad drop`: the link stays, the content goes
    kept, exclusions = _run(tmp_path, participants)
    assert kept == ["sub-01"]
    assert exclusions.loc["sub-02", "reason"] == (
        f"missing input file: {_path(tmp_path, 'mask', '02')} is a symlink to "
        f"{os.readlink(_path(tmp_path, 'mask', '02'))}, which does not exist (a DataLad / git-annex file whose "
        "content was not fetched? `datalad get` it)")


@pytest.mark.parametrize("kind", ["bold", "mask", "confounds"])
def test_a_file_linked_to_another_subjects_file_is_excluded_naming_both(tmp_path, kind):
    participants = _study(tmp_path, ["01", "02", "03"])
    link, other = _path(tmp_path, kind, "02"), _path(tmp_path, kind, "03")
    link.unlink()
    link.symlink_to(os.path.relpath(other, link.parent))  # ../../sub-03/func/sub-03_...: outside the folder
    kept, exclusions = _run(tmp_path, participants)
    assert kept == ["sub-01", "sub-03"]  # the owner of the real file keeps it
    assert exclusions.loc["sub-02", "reason"] == (
        f"{link} resolves to {other}, a file of sub-03, not of sub-02 (a symlink to another subject's data)")


def test_two_subjects_whose_bold_is_one_annex_object_are_both_excluded(tmp_path):
    participants = _study(tmp_path, ["01", "02", "03"])
    key = "SHA256E-s42--samebold.nii.gz"
    target = _annex(tmp_path, _path(tmp_path, "bold", "01"), key)
    _path(tmp_path, "bold", "02").unlink()
    _annex(tmp_path, _path(tmp_path, "bold", "02"), key)  # git-annex stores identical content once
    kept, exclusions = _run(tmp_path, participants)
    assert kept == ["sub-03"]
    assert exclusions.loc["sub-01", "reason"] == (
        f"{_path(tmp_path, 'bold', '01')} is the same file ({target}) as the BOLD of sub-02 "
        f"({_path(tmp_path, 'bold', '02')}): one scan cannot be two subjects' data")
    assert exclusions.loc["sub-02", "reason"].startswith(f"{_path(tmp_path, 'bold', '02')} is the same file")
    assert "BOLD of sub-01" in exclusions.loc["sub-02", "reason"]


def test_hard_linked_bolds_are_both_excluded(tmp_path):
    participants = _study(tmp_path, ["01", "02", "03"])
    _path(tmp_path, "bold", "02").unlink()
    os.link(_path(tmp_path, "bold", "01"), _path(tmp_path, "bold", "02"))
    kept, exclusions = _run(tmp_path, participants)
    assert kept == ["sub-03"] and sorted(exclusions.index) == ["sub-01", "sub-02"]


def test_identical_masks_are_not_a_problem(tmp_path):
    # The demo (and templates) give every subject the same mask: one annex object for all.
    participants = _study(tmp_path, ["01", "02"])
    _annex(tmp_path, _path(tmp_path, "mask", "01"), "SHA256E-s42--mask.nii.gz")
    _path(tmp_path, "mask", "02").unlink()
    _annex(tmp_path, _path(tmp_path, "mask", "02"), "SHA256E-s42--mask.nii.gz")
    kept, _ = _run(tmp_path, participants)
    assert kept == ["sub-01", "sub-02"]


def test_input_problems_without_other_templates_checks_the_bold_only(tmp_path):
    _study(tmp_path, ["01", "02"], skip=[("01", "mask"), ("02", "bold")])
    problems = input_problems(["01", "02"], _templates(tmp_path)["bold"])
    assert problems == {"02": f"no preprocessed BOLD: {_path(tmp_path, 'bold', '02')}"}


def test_input_template_needs_placeholder(tmp_path):
    participants = _study(tmp_path, ["01"])
    with pytest.raises(ConfigError, match=r"input template 'x/mask\.nii\.gz' has no \{subject\} placeholder"):
        build_manifest(participants, "demo", _templates(tmp_path)["bold"], tmp_path / "m.tsv", tmp_path / "e.tsv",
                       input_templates=["x/mask.nii.gz"])


def test_cli_takes_the_input_templates(tmp_path):
    participants = _study(tmp_path, ["01", "02"], skip=[("02", "confounds")])
    t = _templates(tmp_path)
    assert main(["manifest", "--participants", str(participants), "--dataset", "demo", "--bold-template", t["bold"],
                 "--input-templates", t["sidecar"], t["mask"], t["confounds"],
                 "--out", str(tmp_path / "m.tsv"), "--exclusions-out", str(tmp_path / "e.tsv")]) == 0
    exclusions = pd.read_csv(tmp_path / "e.tsv", sep="\t")
    assert exclusions.to_dict("records") == [{
        "participant_id": "sub-02", "stage": "participants",
        "reason": f"missing input file: {_path(tmp_path, 'confounds', '02')}"}]
