"""(d) Training end to end on 100k and 1M snapshots, and the share spent outside LightGBM.

Each run is a fresh child process (`python -m benchmarks.training_time DATA_DIR`): read the
synthetic tables from Parquet and validate them (`load_dataset`), then `run_training` with the
default config (snapshots, features, LightGBM with early stopping, calibration, logistic
regression, point grid, bootstrap metrics). Baseline: the LightGBM call inside the same run
(`lgb.train` with early stopping, timed by the pipeline), so the ratio is end-to-end time over
LightGBM time.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.measure import Section, peak_rss_mb
from benchmarks.synthetic import cached_parquet

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SNAPSHOTS_PER_LEAD = 3.1  # train + validation + test snapshots per synthetic lead, default config


def measure(directory: Path) -> dict[str, object]:
    """Validate and train; runs in the child."""
    from sources.folder import load_dataset
    from sources.grids import load_grid
    from training.config import ProjectConfig
    from training.pipeline import run_training

    config = ProjectConfig()
    start = time.perf_counter()
    dataset = load_dataset(directory, config.features)
    load_s = time.perf_counter() - start
    result = run_training(dataset, config.features, config.training, load_grid(config.training.grid))
    total_s = time.perf_counter() - start
    n = result.split["n_snapshots"]
    return {
        "n_leads": len(dataset.leads),
        "n_interactions": len(dataset.interactions),
        "n_snapshots": n["train"] + n["validation"] + n["test"],
        "n_train": n["train"],
        "trees": result.model.booster.num_trees(),
        "test_auc": result.metrics["model"]["roc_auc"]["value"],
        "load_validate_s": load_s,
        "timings": result.timings,
        "lightgbm_s": result.timings["lightgbm"],
        "total_s": total_s,
        "peak_rss_mb": peak_rss_mb(),
    }


def _run_child(directory: Path) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.training_time", str(directory)],
        check=True, capture_output=True, text=True, cwd=PROJECT_ROOT,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(quick: bool, runs: int | None = None) -> Section:
    section = Section("training", "Training end to end (load + validate + run_training)", quick)
    targets = (5_000,) if quick else (100_000, 1_000_000)
    runs = runs or (1 if quick else 2)
    for target in targets:
        directory = cached_parquet(int(round(target / SNAPSHOTS_PER_LEAD)), seed=2)
        results = [_run_child(directory) for _ in range(runs)]
        total = float(np.median([r["total_s"] for r in results]))
        lgbm = float(np.median([r["lightgbm_s"] for r in results]))
        n_snapshots = results[0]["n_snapshots"]
        label = f"training end to end, {n_snapshots:,} snapshots ({results[0]['n_leads']:,} leads)"
        big = target >= 1_000_000
        section.add(label, "wall time", "s", total, "LightGBM training inside the same run", lgbm, runs,
                    **({"target": "<= 300 s", "limit": 300.0} if big else {}),
                    note=f"outside LightGBM: {100 * (1 - lgbm / total):.0f} %; "
                         f"{results[0]['trees']} trees; test AUC {results[0]['test_auc']:.3f}")
        section.details[str(target)] = results
    return section


if __name__ == "__main__":
    print(json.dumps(measure(Path(sys.argv[1]))))
