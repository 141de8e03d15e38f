"""Shared fixtures: a small simulated data set and a model trained on it, once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_GRID = PROJECT_ROOT / "data" / "grids" / "default.yaml"
ARTIFACTS = PROJECT_ROOT / "tests" / "artifacts"


@pytest.fixture(autouse=True)
def _isolated_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    """mlflow.set_tracking_uri writes MLFLOW_TRACKING_URI into os.environ; keep tests apart."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="session")
def simulated_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3,000 simulated leads in the data contract's files (seed 11)."""
    from leadscore.simulator import simulate, write_simulation

    out = tmp_path_factory.mktemp("sim")
    write_simulation(simulate(3_000, seed=11), out)
    return out


@pytest.fixture(scope="session")
def simulated_dataset(simulated_dir: Path):  # noqa: ANN201
    from features.contract import load_dataset
    from leadscore.config import ProjectConfig

    return load_dataset(simulated_dir, ProjectConfig().features)


@pytest.fixture(scope="session")
def training_result(simulated_dir: Path, simulated_dataset):  # noqa: ANN001, ANN201
    from features.grid import load_grid
    from leadscore.config import ProjectConfig
    from leadscore.simulator import read_truth, true_conversion_probability
    from training.pipeline import run_training

    config = ProjectConfig()
    config.training.n_bootstrap = 50
    truth = read_truth(simulated_dir / "truth.csv")
    return run_training(
        simulated_dataset,
        config.features,
        config.training,
        load_grid(DEFAULT_GRID),
        lambda snaps, h: true_conversion_probability(truth, snaps["lead_id"].to_numpy(), snaps["as_of"], h),
    )


@pytest.fixture(scope="session")
def trained_bundle(training_result, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: ANN001
    """Folder of a bundle trained on the simulated set."""
    return training_result.model.save(tmp_path_factory.mktemp("bundle") / "bundle")


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where tests keep files worth looking at after a run (screenshots, reports)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
