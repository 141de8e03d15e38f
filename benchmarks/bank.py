"""UCI Bank Marketing in time order: the chosen model vs the team's grid vs logistic regression.

    python -m benchmarks.bank [--data PATH/bank-full.csv] [--out results.json] [--no-backtest]

Everything goes through the project's own path (`examples/bank-marketing.yaml` read by
`sources.loader`, the leakage guard, `training.selection`): the row number is the clock, the
last 20 % of rows are the test period, and `duration` is left out by the guard. The model is
chosen among the candidates (`training.candidates`) on rolling-origin folds of the rows before
the test period, then measured once on it beside the grid of `examples/bank-marketing-grid.yaml`
and the logistic regression baseline, with bootstrap intervals. The rolling backtest replays the
same at five starts (50 %, 60 %, ..., 90 % of the rows), each scored on the next 10 %.

The export is read where it is (`../shared/datasets/bank-marketing/bank-full.csv` by default)
and never copied; only aggregate figures are printed and written.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

from sources.grids import load_grid
from sources.loader import load_project_data
from training.config import load_config
from training.leakage import guard_input_for_static, run_guard, spec_without
from training.metrics import metrics_table
from training.selection import dates_sentence, run_chosen_static_training, static_backtest
from training.static import evaluation_plan

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = PROJECT_ROOT.parent / "shared" / "datasets" / "bank-marketing" / "bank-full.csv"
DEFAULT_CONFIG = PROJECT_ROOT / "examples" / "bank-marketing.yaml"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="bank-full.csv of the UCI export")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="the mapping (examples/bank-marketing.yaml)")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    parser.add_argument("--no-backtest", dest="backtest", action="store_false", help="skip the rolling backtest")
    args = parser.parse_args(argv)

    clock = time.perf_counter()
    config = load_config(args.config)
    assert config.data is not None
    project = load_project_data(config.data, config.features, leads_path=args.data)
    data = project.dataset
    training = config.training
    guard = run_guard(
        guard_input_for_static(data, config.features, training.test_fraction, post_outcome=project.post_outcome),  # type: ignore[arg-type]
        seed=training.seed,
    )
    spec = spec_without(config.features, guard.excluded())
    grid = load_grid(training.grid)
    plan = evaluation_plan(data, training, order_name=config.data.leads.order_name())  # type: ignore[arg-type]
    print(f"{len(data.leads)} leads; left out by the leakage guard: {guard.excluded()}")
    result, selection = run_chosen_static_training(
        data, spec, training, grid, plan, training.selection, progress=lambda m: print(f"  {m}", flush=True),  # type: ignore[arg-type]
        order_name=config.data.leads.order_name(),
    )
    print(f"\n{plan.description}")
    if selection is not None:
        print("chosen on rolling-origin folds before the test period:")
        for line in selection.lines():
            print(f"  {line}")
    print(metrics_table(result.metrics))
    print(dates_sentence(result.model.meta.training, config.data.leads.order_name()))
    figures: dict[str, object] = {
        "test": {"description": plan.description, "metrics": result.metrics},
        "selection": selection.to_dict() if selection else None,
    }
    if args.backtest:
        print("\nrolling backtest (each period scored by a method that learned only from the rows before it):")
        table = static_backtest(data, spec, training, grid, training.selection, progress=lambda m: print(f"  {m}", flush=True))  # type: ignore[arg-type]
        print(table.to_markdown(index=False, floatfmt=".3f"))
        means = table[["model_auc", "point_grid_auc", "logistic_regression_auc"]].mean()
        print(
            f"mean ROC AUC over periods: model {means['model_auc']:.3f}, grid {means['point_grid_auc']:.3f}, "
            f"logistic regression {means['logistic_regression_auc']:.3f}"
        )
        figures["backtest"] = table.to_dict(orient="records")
    figures["seconds"] = round(time.perf_counter() - clock, 1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=2, default=float))
        print(f"figures written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
