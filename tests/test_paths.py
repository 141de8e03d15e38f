"""Paths and package data: leadscore works from any folder, and a missing file names its setting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from features.grid import PointGrid
from leadscore.cli import app
from sources.grids import BUILTIN_GRIDS, load_grid

runner = CliRunner()


@pytest.mark.parametrize("name", BUILTIN_GRIDS)
def test_a_builtin_grid_loads_by_name_from_any_folder(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    grid = load_grid(name)
    assert isinstance(grid, PointGrid) and grid.rules


def test_train_outside_the_repository_uses_the_packaged_grid(simulated_dir: Path, tmp_path: Path) -> None:
    # A fresh folder with no leadscore.yaml and no data/grids/: only the installed package.
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    completed = subprocess.run(
        [sys.executable, "-m", "leadscore", "train", "--data", str(simulated_dir), "--no-mlflow"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "point_grid" in completed.stdout


def test_a_missing_grid_names_its_option_before_the_data_is_read(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "--data", str(tmp_path / "no-such-folder"), "--grid", str(tmp_path / "mine.yaml"), "--no-mlflow"])
    assert result.exit_code == 2
    assert "--grid:" in result.output and "mine.yaml: no such grid file" in result.output
    assert "no such data folder" not in result.output  # the grid is checked first


def test_a_missing_configured_grid_names_training_grid(tmp_path: Path) -> None:
    config = tmp_path / "leadscore.yaml"
    config.write_text(yaml.safe_dump({"training": {"grid": str(tmp_path / "team-grid.yaml")}}))
    result = runner.invoke(app, ["train", "--config", str(config), "--data", str(tmp_path), "--no-mlflow"])
    assert result.exit_code == 2
    assert "training.grid:" in result.output and "built-in grids: default" in result.output
