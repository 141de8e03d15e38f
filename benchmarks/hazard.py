"""When: the discrete-time hazard against the main model and the oracle on simulated leads.

`python -m benchmarks.hazard --leads 20000 --seed 7` simulates the leads, trains the main model
as `leadscore train` does (`run_training` with the default config, its model selection
included unless `--no-selection`), fits the hazard (`training.hazard`) on the same periods and
prints, per horizon, the test-period ROC AUC of the hazard's P(within t), of the main model's
horizon probability and of the oracle's P(within t), with 95 % bootstrap intervals by lead, on the
same rows; then the integrated Brier score over days 1..horizon of the hazard and the oracle, and
the issue's two checks (90-day AUC within 0.01 of the main model; shorter horizons above it).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any


def run(n_leads: int, seed: int, n_bootstrap: int, selection: bool) -> dict[str, Any]:
    """Simulate, train, fit the hazard; the figures and the seconds each step took."""
    from benchmarks.bench_model import simulated_with_oracle
    from sources.grids import load_grid
    from training.config import ProjectConfig
    from training.hazard import fit_hazard, hazard_rows
    from training.pipeline import run_training

    config = ProjectConfig()
    config.training.n_bootstrap = n_bootstrap
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    data, oracle = simulated_with_oracle(n_leads, seed, config.features)
    seconds["simulate"] = time.perf_counter() - clock

    clock = time.perf_counter()
    result = run_training(data, config.features, config.training, load_grid(config.training.grid), oracle,
                          selection=config.training.selection if selection else None)  # fmt: skip
    seconds["main_model"] = time.perf_counter() - clock
    clock = time.perf_counter()
    rows = hazard_rows(data, config.features, config.training)
    fit = fit_hazard(result, data, config.features, config.training, rows, oracle)
    seconds["hazard"] = time.perf_counter() - clock
    return {
        "n_leads": n_leads,
        "seed": seed,
        "main_model": result.candidate.name if result.candidate else "lightgbm",
        "main_model_test_auc": result.metrics["model"]["roc_auc"],
        "hazard_trees": fit.measured.settings.trees,
        "hazard_training": fit.measured.settings.training,
        "metrics": fit.metrics,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
    }


def checks(metrics: dict[str, Any], horizon: str) -> list[str]:
    """The issue's two conditions, each with the figures it compares."""
    lines = []
    for t, entry in metrics["horizons"].items():
        hazard, main = entry["hazard"]["roc_auc"]["value"], entry["model"]["roc_auc"]["value"]
        if t == horizon:
            ok = abs(hazard - main) <= 0.01 or hazard > main
            lines.append(f"{t}-day AUC within 0.01 of the main model: {'yes' if ok else 'NO'} ({hazard:.4f} vs {main:.4f})")
        else:
            lines.append(f"{t}-day AUC above the main model's: {'yes' if hazard > main else 'NO'} ({hazard:.4f} vs {main:.4f})")
    return lines


def main() -> None:
    from training.hazard import hazard_lines

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=20_000, help="Simulated leads")
    parser.add_argument("--seed", type=int, default=7, help="Simulation seed")
    parser.add_argument("--bootstrap", type=int, default=200, help="Bootstrap resamples (by lead)")
    parser.add_argument("--no-selection", action="store_true", help="Main model: LightGBM without the model choice")
    parser.add_argument("--out", type=Path, default=None, help="Also write the figures as JSON here")
    args = parser.parse_args()
    figures = run(args.leads, args.seed, args.bootstrap, not args.no_selection)
    print(f"{figures['n_leads']:,} simulated leads (seed {figures['seed']}); main model {figures['main_model']}; "
          f"hazard {figures['hazard_trees']} trees on {figures['hazard_training']['fit_rows']:,} person-period rows")  # fmt: skip
    print("\n".join(hazard_lines(figures["metrics"])))
    horizon = list(figures["metrics"]["horizons"])[-1]
    print("\n".join(checks(figures["metrics"], horizon)))
    print(f"seconds: {figures['seconds']}")
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
