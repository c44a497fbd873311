"""The files users expect at the repository root agree with pyproject.toml: LICENSE, CITATION.cff, CHANGELOG.md."""

import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.version import Version

import brainage

REPO = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _words(text: str) -> str:
    # Compare license texts by their words: line breaks and list markers are layout.
    unmarked = (re.sub(r"^\s*(?:\d+\.|\*|-)\s+", "", line) for line in text.splitlines())
    return " ".join(" ".join(unmarked).split())


def test_license_is_the_bsd_3_clause_text_that_pyproject_declares():
    assert PROJECT["license"] == {"text": "BSD-3-Clause"}
    text = (REPO / "LICENSE").read_text()
    lines = text.splitlines()
    assert lines[0] == "BSD 3-Clause License"
    assert "Copyright (c) 2026, The brainage developers" in lines
    words = _words(text)
    # The three conditions and the disclaimer, word for word (SPDX BSD-3-Clause).
    for clause in (
        "Redistribution and use in source and binary forms, with or without modification, are permitted "
        "provided that the following conditions are met:",
        "Redistributions of source code must retain the above copyright notice, this list of conditions and "
        "the following disclaimer.",
        "Redistributions in binary form must reproduce the above copyright notice, this list of conditions and "
        "the following disclaimer in the documentation and/or other materials provided with the distribution.",
        "Neither the name of the copyright holder nor the names of its contributors may be used to endorse or "
        "promote products derived from this software without specific prior written permission.",
        'THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS" AND ANY EXPRESS OR IMPLIED '
        "WARRANTIES,",
        "EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.",
    ):
        assert clause in words, clause
    assert words.endswith("EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.")


def test_citation_file_agrees_with_pyproject():
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text(encoding="utf-8"))
    assert {"cff-version", "message", "title", "authors"} <= set(cff)  # required by CFF 1.2.0
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software"
    assert cff["title"] == "brainage: brain age from resting-state fMRI"
    assert cff["version"] == PROJECT["version"] == brainage.__version__
    assert cff["license"] == PROJECT["license"]["text"]
    assert cff["authors"] == [{"name": "The brainage developers"}]
    assert cff["abstract"].strip() and all(isinstance(k, str) and k for k in cff["keywords"])


def test_citation_references_are_complete_and_match_the_pinned_tools():
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text(encoding="utf-8"))
    pins = {Requirement(d).name.lower(): str(Requirement(d).specifier) for d in PROJECT["dependencies"]}
    titles = {}
    for ref in cff["references"]:
        assert {"type", "title", "authors"} <= set(ref) and ref["authors"], ref.get("title")
        assert all(a.get("name") or (a.get("family-names") and a.get("given-names")) for a in ref["authors"])
        # A DOI, not a resolver URL (the CFF schema's pattern).
        assert "doi" not in ref or re.fullmatch(r"10\.\d{4,9}(\.\d+)?/[A-Za-z0-9:/_;\-.()\[\]\\]+", ref["doi"])
        if ref["type"] == "article":
            assert {"journal", "volume", "start", "year"} <= set(ref), ref["title"]
        titles[ref["title"]] = ref
    assert titles["Nilearn"]["version"] == pins["nilearn"].removeprefix("==")
    assert "snakemake" in pins and "Sustainable data analysis with Snakemake" in titles
    assert titles["fMRIPrep: a robust preprocessing pipeline for functional MRI"]["doi"] == "10.1038/s41592-018-0235-4"


def test_changelog_keeps_a_changelog_and_its_last_release_is_pyproject_version():
    text = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
    assert text.startswith("# Changelog\n")
    releases = re.findall(r"^## \[([^\]]+)\](.*)$", text, re.M)
    assert releases[0] == ("Unreleased", "")
    assert releases[1][0] == PROJECT["version"]  # the newest release is the version pyproject.toml gives
    for version, dated in releases[1:]:
        Version(version)
        assert re.fullmatch(r" - \d{4}-\d\d-\d\d", dated), version
    # Each release: groups of Keep a Changelog's kinds, each with at least one entry.
    for section in re.split(r"^## ", text, flags=re.M)[1:]:
        groups = re.split(r"^### ", section, flags=re.M)[1:]
        assert groups, section.splitlines()[0]
        for group in groups:
            kind, _, body = group.partition("\n")
            assert kind in {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}, kind
            assert re.search(r"^- \S", body, re.M), kind
