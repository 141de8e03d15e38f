"""`make bench` runs: the quick benchmark writes well-formed results (no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.run import SECTIONS

pytestmark = pytest.mark.slow

PROJECT_ROOT = Path(__file__).resolve().parents[1]
FIGURE_KEYS = {"name", "metric", "unit", "value", "baseline_name", "baseline", "ratio", "runs", "target", "met", "note"}


@pytest.fixture(scope="module")
def quick_run(trained_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("bench")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--out", str(out), "--bundle", str(trained_bundle)],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done.stdout


def test_every_section_writes_its_json(quick_run: tuple[Path, str]) -> None:
    out, _ = quick_run
    written = {p.stem for p in out.glob("*.json")}
    x_education = PROJECT_ROOT.parent / "shared" / "datasets" / "x-education" / "Leads.csv"
    expected = set(SECTIONS) if x_education.is_file() else set(SECTIONS) - {"x_education"}
    assert written == expected


def test_results_follow_the_schema(quick_run: tuple[Path, str]) -> None:
    out, _ = quick_run
    for path in out.glob("*.json"):
        result = json.loads(path.read_text())
        assert result["schema"] == 1
        assert result["section"] == path.stem
        assert result["quick"] is True
        assert {"cpus", "load_average", "lightgbm"} <= set(result["machine"])
        assert result["figures"], path.name
        for figure in result["figures"]:
            assert set(figure) == FIGURE_KEYS, path.name
            assert figure["value"] > 0 and figure["baseline"] > 0, figure["name"]
            assert figure["ratio"] > 0, figure["name"]
            assert figure["runs"] >= 1
            assert figure["met"] in (True, False, None)
            assert (figure["met"] is None) == (figure["target"] == ""), figure["name"]


def test_prints_one_markdown_table(quick_run: tuple[Path, str]) -> None:
    out, stdout = quick_run
    rows = [line for line in stdout.splitlines() if line.startswith("| ")]
    n_figures = sum(len(json.loads(p.read_text())["figures"]) for p in out.glob("*.json"))
    assert rows[0].startswith("| benchmark | stat | figure | bare baseline |")
    assert len(rows) == 1 + n_figures  # the header, then one row per figure
