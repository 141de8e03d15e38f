"""Explanation cost: exact TreeSHAP against model size, and the AUC each size buys.

Exact TreeSHAP (`pred_contrib`) costs about sum over trees of leaves x depth^2 per row, a
prediction about sum over trees of depth: a model's size decides what reasons cost. This
trains LightGBM over a grid of sizes (learning rate x leaves x depth, early stopping on the
validation period, everything else the project default) on the same matrices the pipeline
builds, and measures per size: trees, total leaves, mean leaf depth, validation and test
ROC AUC, and the one-row `predict` and `pred_contrib` times (interleaved, single-threaded).

`run` (in `make bench`) compares the previous default (0.05 / 31 leaves / unbounded depth /
patience 100) with the current one on the bench data; `python -m benchmarks.explain_budget
--leads N` runs the whole grid (benchmarks/README.md, "Explanation cost").
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from benchmarks.bench_model import DEFAULT_GRID
from benchmarks.measure import RESULTS_DIR, Section, interleaved
from sources.folder import load_dataset
from sources.grids import load_grid
from training.config import LightGBMParams, ProjectConfig, TrainingConfig
from training.pipeline import TrainingResult, fit_lightgbm, lightgbm_params, run_training

# The LightGBM defaults before the small-tree budget (settings added since kept LightGBM's own).
PREVIOUS_DEFAULT = {
    "learning_rate": 0.05, "num_leaves": 31, "max_depth": -1, "min_child_samples": 50, "feature_fraction": 0.8,
    "early_stopping_rounds": 100,
}
GRID_RATES = (0.05, 0.1)
GRID_SHAPES = ((7, -1), (15, 4), (15, -1), (31, -1), (31, 6), (63, -1))


def _depths(node: dict[str, object], depth: int = 0) -> list[int]:
    if "split_index" not in node:  # a leaf
        return [depth]
    return _depths(node["left_child"], depth + 1) + _depths(node["right_child"], depth + 1)  # type: ignore[arg-type]


def _matrices(data_dir: Path) -> TrainingResult:
    config = ProjectConfig()
    config.training.n_bootstrap = 0
    dataset = load_dataset(data_dir, config.features)
    return run_training(dataset, config.features, config.training, load_grid(DEFAULT_GRID))


def measure_size(result: TrainingResult, overrides: dict[str, float], calls: int) -> dict[str, float]:
    """Train one model size on the pipeline's matrices and measure it.

    Args:
        result: A training run whose train/validation/test matrices are reused.
        overrides: LightGBM settings that differ from the current default.
        calls: One-row timing calls per operation.
    """
    training = TrainingConfig()
    training.lightgbm = LightGBMParams(**{**training.lightgbm.model_dump(), **overrides})
    params = training.lightgbm
    names = result.model.feature_names
    booster = fit_lightgbm(
        lightgbm_params(training), (result.train.matrix, result.train.y), (result.valid.matrix, result.valid.y),
        feature_names=names, categorical=[names.index(c) for c in result.model.spec.categorical_features()],
        max_rounds=params.max_rounds, early_stopping_rounds=params.early_stopping_rounds,
    )
    depths = [_depths(t["tree_structure"]) for t in booster.dump_model()["tree_info"]]
    row = result.test.matrix[:1].copy()
    times = interleaved(
        {
            "predict": lambda: booster.predict(row, raw_score=True, num_threads=1),
            "contrib": lambda: booster.predict(row, pred_contrib=True, num_threads=1),
        },
        calls,
    )
    predict_ms, contrib_ms = float(np.median(times["predict"])), float(np.median(times["contrib"]))
    return {
        "learning_rate": params.learning_rate,
        "num_leaves": params.num_leaves,
        "max_depth": params.max_depth,
        "early_stopping_rounds": params.early_stopping_rounds,
        "trees": booster.num_trees(),
        "leaves_total": int(sum(len(d) for d in depths)),
        "mean_leaf_depth": float(np.mean([np.mean(d) for d in depths])),
        "auc_validation": float(roc_auc_score(result.valid.y, booster.predict(result.valid.matrix))),
        "auc_test": float(roc_auc_score(result.test.y, booster.predict(result.test.matrix))),
        "predict_ms": predict_ms,
        "contrib_ms": contrib_ms,
        "contrib_over_predict": contrib_ms / predict_ms,
    }


def run(data_dir: Path, quick: bool) -> Section:
    """Previous default vs current default on the same matrices (a `make bench` section)."""
    section = Section("explain", "Explanation cost: exact TreeSHAP, previous vs current model size", quick)
    result = _matrices(data_dir)
    calls = 200 if quick else 2000
    before = measure_size(result, PREVIOUS_DEFAULT, calls)
    current = LightGBMParams()
    after = measure_size(result, {}, calls)
    for label, m in (("previous default (0.05, 31 leaves, depth -1)", before),
                     (f"current default ({current.learning_rate:g}, {current.num_leaves} leaves, "
                      f"depth {current.max_depth})", after)):
        section.add(f"pred_contrib, one row, {label}: {m['trees']} trees, {m['leaves_total']} leaves, "
                    f"mean depth {m['mean_leaf_depth']:.1f}", "p50", "ms", m["contrib_ms"],
                    "bare LightGBM predict, same model, one row", m["predict_ms"], calls,
                    note=f"validation AUC {m['auc_validation']:.4f}, test AUC {m['auc_test']:.4f}")
    section.details.update(before=before, after=after,
                           auc_cost_validation=before["auc_validation"] - after["auc_validation"],
                           auc_cost_test=before["auc_test"] - after["auc_test"],
                           n_train=len(result.train.y), n_validation=len(result.valid.y), n_test=len(result.test.y))
    return section


def sweep(data_dir: Path, calls: int) -> list[dict[str, float]]:
    """Every size of the grid on one data set, other settings as the previous default; grid order."""
    result = _matrices(data_dir)
    rows = []
    for rate, (leaves, depth) in itertools.product(GRID_RATES, GRID_SHAPES):
        size = {"learning_rate": rate, "num_leaves": leaves, "max_depth": depth}
        rows.append(measure_size(result, {**PREVIOUS_DEFAULT, **size}, calls))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=20_000, help="Simulated leads (simulator.funnel).")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--calls", type=int, default=1000, help="One-row timing calls per size.")
    args = parser.parse_args()
    from benchmarks.bench_model import simulated_data

    rows = sweep(simulated_data(args.leads, args.seed), args.calls)
    path = RESULTS_DIR / f"explain_sweep_{args.leads}.json"
    path.write_text(json.dumps(rows, indent=2) + "\n")
    print("| rate | leaves | depth | trees | leaves total | mean depth | AUC valid | AUC test | predict ms | contrib ms | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['learning_rate']:g} | {r['num_leaves']} | {r['max_depth']} | {r['trees']} | {r['leaves_total']} | "
              f"{r['mean_leaf_depth']:.2f} | {r['auc_validation']:.4f} | {r['auc_test']:.4f} | "
              f"{r['predict_ms']:.3f} | {r['contrib_ms']:.3f} | {r['contrib_over_predict']:.1f} |")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
