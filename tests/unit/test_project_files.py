"""The files users expect at the repository root agree with pyproject.toml: LICENSE."""

import re
import tomllib
from pathlib import Path

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
