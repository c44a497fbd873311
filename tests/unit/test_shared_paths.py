"""tests/shared_paths.py: a test needing ../shared skips where it is absent, and fails under CI."""

import pytest
from shared_paths import on_ci, require_shared


def test_require_shared_returns_an_existing_path(tmp_path, monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert require_shared(tmp_path, "the data") == tmp_path


def test_a_missing_shared_path_skips_locally(tmp_path, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"the data not found at .*missing"):
        require_shared(tmp_path / "missing", "the data")


@pytest.mark.parametrize("value", ["true", "1", "True"])
def test_a_missing_shared_path_fails_under_ci(tmp_path, monkeypatch, value):
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match=r"the data not found at .*missing: under CI \(CI='"):
        require_shared(tmp_path / "missing", "the data")


@pytest.mark.parametrize(("value", "expected"), [("", False), ("false", False), ("0", False), ("true", True)])
def test_ci_is_any_value_but_false_or_empty(monkeypatch, value, expected):
    monkeypatch.setenv("CI", value)
    assert on_ci() is expected
