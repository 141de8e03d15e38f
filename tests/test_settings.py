"""`model.settings`: every `LEADSCORE_*` variable is a field, read when asked, named in errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import model.settings as settings_module
from model.settings import DEFAULT_MAX_BODY_BYTES, Settings, SettingsError, env_name, load_settings

ROOT = Path(__file__).resolve().parents[1]
VARIABLE = re.compile(r"\bLEADSCORE_[A-Z_]*[A-Z]\b")
# Where the project's code and documentation are; the venv and generated results are not.
SOURCES = ["*.md", "Makefile", "bentofile.yaml", "leadscore.yaml", "docs/**/*.md", "examples/**/*", "notebooks/*.ipynb"]
# Names that are not settings of leadscore: a user's own variable, expanded in a source URL (`${VAR}`).
NOT_SETTINGS = {"LEADSCORE_TEST_DB"}
PACKAGES = ["leadscore", "training", "serving", "scaleout", "sources", "simulator", "model", "features", "benchmarks", "tests"]


def mentioned_variables() -> dict[str, set[str]]:
    """Every `LEADSCORE_*` name in the code and documentation -> the files that mention it."""
    files = [path for pattern in SOURCES for path in ROOT.glob(pattern)]
    files += [path for package in PACKAGES for path in (ROOT / package).rglob("*.py")]
    found: dict[str, set[str]] = {}
    for path in files:
        if path.is_file():
            for name in VARIABLE.findall(path.read_text(errors="replace")):
                found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_leadscore_variable_mentioned_anywhere_is_a_settings_field() -> None:
    mentioned = mentioned_variables()
    fields = {env_name(field) for field in Settings.model_fields}

    assert "LEADSCORE_API_KEYS" in mentioned and "LEADSCORE_STATE_DIR" in mentioned  # the scan finds them
    unknown = {name: sorted(files) for name, files in mentioned.items() if name not in fields | NOT_SETTINGS}
    assert not unknown, f"not Settings fields: {unknown}"


def test_every_field_is_documented() -> None:
    undocumented = [name for name, field in Settings.model_fields.items() if not field.description]
    unlisted = [name for name in Settings.model_fields if f"| `{env_name(name)}` |" not in (settings_module.__doc__ or "")]

    assert undocumented == [] and unlisted == []  # a description, and a row in the module's table


def test_defaults_without_any_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(env_name(name), raising=False)

    settings = load_settings()

    assert settings.bundle is None and settings.score_log is None and settings.api_keys is None
    assert settings.poll_seconds == 30 and settings.max_body_bytes == DEFAULT_MAX_BODY_BYTES
    assert settings.state_dir == Path(".leadscore") and settings.resolved_compiled_dir() == Path(".leadscore/compiled")
    assert settings.model_name == "leadscore"


def test_settings_are_read_when_asked_not_at_import(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LEADSCORE_POLL_SECONDS", "5")
    monkeypatch.setenv("LEADSCORE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LEADSCORE_BUNDLE", "")  # empty is unset

    settings = load_settings()

    assert settings.poll_seconds == 5 and settings.bundle is None
    assert settings.resolved_compiled_dir() == tmp_path / "state" / "compiled"
    assert not (tmp_path / "state").exists()  # reading settings creates nothing
    monkeypatch.setenv("LEADSCORE_POLL_SECONDS", "7")
    assert load_settings().poll_seconds == 7


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"LEADSCORE_POLL_SECONDS": "-1"}, "LEADSCORE_POLL_SECONDS: Input should be greater than or equal to 0 (got '-1')"),
        ({"LEADSCORE_POLL_SECONDS": "often"}, "LEADSCORE_POLL_SECONDS: Input should be a valid integer"),
        ({"LEADSCORE_MAX_BODY_BYTES": "100"}, "LEADSCORE_MAX_BODY_BYTES: Input should be greater than or equal to 1024"),
        ({"LEADSCORE_LEAD_KEY": "short-key"}, "LEADSCORE_LEAD_KEY: Value should have at least 16"),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(message)) as caught:
        load_settings(environ)
    assert "short-key" not in str(caught.value)  # a secret is named, never shown
