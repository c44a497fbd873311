"""brainage.participants.inputs: every input file present, and the subject's own (symlinks allowed)."""

import os

import pandas as pd
import pytest

from brainage.participants import build_manifest
from brainage.participants.__main__ import main
from brainage.participants.discover import Selection
from brainage.participants.inputs import input_problems
from fmriprep_layouts import SPACE, run_names

HEADER = "participant_id\tage\tsex\tsite\n"
KINDS = {"bold": "bold", "sidecar": "bold_json", "mask": "mask", "confounds": "confounds"}
REST = Selection(task="rest", space=SPACE)


def _path(root, kind, label):
    return root / "deriv" / run_names(label)[KINDS[kind]]


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
    out, excl = root / "manifest.tsv", root / "excl.tsv"
    build_manifest(participants, "demo", root / "deriv", REST, out, excl)
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
    # Without a BOLD nothing else is looked for: the reason names the pattern and the folder.
    assert exclusions.loc["sub-05", "reason"] == (
        f"no preprocessed BOLD: nothing named sub-05[_ses-*]_task-rest[_acq-*][_run-*]_space-{SPACE}[_res-*]"
        f"_desc-preproc_bold.nii.gz in {tmp_path / 'deriv' / 'sub-05'} (func/ or ses-*/func/)")


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


def test_input_problems_names_every_missing_file_the_bold_first(tmp_path):
    _study(tmp_path, ["01", "02"], skip=[("01", "mask"), ("02", "bold")])
    problems = input_problems({label: [_path(tmp_path, kind, label) for kind in KINDS] for label in ("01", "02")})
    assert problems == {"01": f"missing input file: {_path(tmp_path, 'mask', '01')}",
                        "02": f"no preprocessed BOLD: {_path(tmp_path, 'bold', '02')}"}
