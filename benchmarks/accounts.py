"""Accounts: the account model vs the naive roll-ups vs the account oracle, on simulated buying groups.

    python -m benchmarks.accounts --accounts 5000 --seed 7 [--bootstrap 200] [--out results.json]

Simulates `--accounts` accounts (`simulator.accounts`: buying groups of 1-8 leads whose joint,
role-weighted intent drives the account's conversion), trains the account model
(`training.accounts.run_account_training`, default training settings) and prints, on the same
test account snapshots, the ROC AUC with 95 % bootstrap intervals (resampling accounts) of the
account model, the max of the contacts' lead probabilities, the noisy-or 1 - prod(1 - p), and
the account oracle (the simulator's exact P(convert within the horizon)).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from sklearn.metrics import roc_auc_score

from features.contract import validate
from simulator.accounts import simulate_accounts, true_account_conversion_probability
from training.accounts import run_account_training
from training.config import ProjectConfig
from training.metrics import metrics_table


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=5000, help="simulated accounts")
    parser.add_argument("--seed", type=int, default=7, help="simulation and training seed")
    parser.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples of the intervals")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args(argv)

    clock = time.perf_counter()
    sim = simulate_accounts(args.accounts, seed=args.seed)
    config = ProjectConfig()
    config.training.n_bootstrap = args.bootstrap
    config.training.seed = args.seed
    data = validate(sim.leads, sim.interactions, config.features, sim.export_at)
    result = run_account_training(
        data.leads,
        data.interactions,
        config.features,
        config.training,
        data.data_end,
        accounts=sim.accounts,
        oracle=lambda snaps, h: true_account_conversion_probability(sim.truth, snaps["account_id"], snaps["as_of"], h),
        progress=print,
    )
    seconds = time.perf_counter() - clock
    auc = {name: m["roc_auc"] for name, m in result.metrics.items()}
    test = result.test
    figures: dict[str, object] = {
        "accounts": args.accounts,
        "seed": args.seed,
        "leads": len(sim.leads),
        "test_accounts": result.split["n_test_accounts"],
        "test_snapshots": len(test.snapshots),
        "test_conversions": int(test.y.sum()),
        "roc_auc": auc,
        "seconds": round(seconds, 1),
    }
    print()
    print(f"{args.accounts} simulated accounts (seed {args.seed}), {len(sim.leads)} leads; test: {figures['test_accounts']} accounts, "
          f"{figures['test_snapshots']} snapshots, {figures['test_conversions']} conversions; {seconds:.0f} s")  # fmt: skip
    print(metrics_table({name: {"roc_auc": m["roc_auc"], "pr_auc": m["pr_auc"]} for name, m in result.metrics.items()}))
    for other, gain in result.gains.items():
        print(f"account model - {other}: {gain['value']:+.3f} ROC AUC, paired 95 % interval [{gain['ci_low']:+.3f}, {gain['ci_high']:+.3f}]")
    by_offset = {}
    for offset in sorted(test.snapshots["offset_days"].unique()):
        rows = (test.snapshots["offset_days"] == offset).to_numpy()
        if 0 < test.y[rows].sum() < rows.sum():
            by_offset[f"{offset:g}"] = {name: round(float(roc_auc_score(test.y[rows], p[rows])), 3) for name, p in test.scores.items()}
    print("ROC AUC by snapshot offset (days after the first contact):")
    for offset, values in by_offset.items():
        print(f"  {offset:>3}: " + ", ".join(f"{k} {v:.3f}" for k, v in values.items()))
    figures["gains"] = result.gains
    figures["roc_auc_by_offset"] = by_offset
    if args.out is not None:
        args.out.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    main()
