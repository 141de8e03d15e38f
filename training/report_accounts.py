"""The report's accounts section: the account model beside the naive roll-ups, on the same test accounts.

The section answers what sales leadership asks of an account score: does scoring the buying group
as a whole rank companies better than the best of their contacts (the max roll-up) or "anyone of
them converts" (1 - prod(1 - p))? Each scorer's test ROC AUC is shown with its 95 % interval
(bootstrap by account), the account model's paired gain over each roll-up, and the test accounts
it ranks first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from training.accounts import AccountTrainingResult, account_report

SCORER_NAMES = {
    "account_model": "Account model",
    "max_rollup": "Best contact (max roll-up)",
    "noisy_or_rollup": "Any contact (1 − ∏(1 − p))",
    "oracle": "Oracle (simulated truth)",
}
TOP_ACCOUNTS = 10


@dataclass(frozen=True)
class AccountSection:
    """What the report shows of the account model (all of it from its test period).

    Attributes:
        scorers: Per scorer: `key`, `name`, `roc_auc`, `ci_low`, `ci_high`.
        gains: Per roll-up: `name`, `gain` (account model's ROC AUC minus the roll-up's), `ci_low`, `ci_high`.
        top: The test account snapshots the account model ranks first: `account_id`, `as_of`
            (date), `probability`, `max_rollup`, `noisy_or_rollup`, `n_contacts`,
            `n_roles_covered`, `converted`.
        n_accounts, n_snapshots: Test accounts and their snapshots.
        test_start: First day of the account test period (ISO).
    """

    scorers: list[dict[str, Any]]
    gains: list[dict[str, Any]]
    top: list[dict[str, Any]]
    n_accounts: int
    n_snapshots: int
    test_start: str


def account_section(result: AccountTrainingResult, top: int = TOP_ACCOUNTS) -> AccountSection:
    """The accounts section of the report from an account training run (`run_account_training`)."""
    _table, ranked = account_report(result, top=top)
    scorers = [
        {"key": key, "name": SCORER_NAMES.get(key, key), "roc_auc": m["roc_auc"]["value"],
         "ci_low": m["roc_auc"]["ci_low"], "ci_high": m["roc_auc"]["ci_high"]}
        for key, m in result.metrics.items()
        if "roc_auc" in m
    ]  # fmt: skip
    gains = [
        {"name": SCORER_NAMES.get(key, key), "gain": g["value"], "ci_low": g["ci_low"], "ci_high": g["ci_high"]}
        for key, g in result.gains.items()
        if key != "oracle"
    ]
    rows = ranked.to_dict("records")
    for row in rows:
        row["as_of"] = str(row["as_of"])[:10]
    return AccountSection(
        scorers=scorers,
        gains=gains,
        top=rows,
        n_accounts=int(result.split.get("n_test_accounts", 0)),
        n_snapshots=len(result.test.y),
        test_start=str(result.split.get("test_start", ""))[:10],
    )


def accounts_chart(section: AccountSection, svg: Callable[[plt.Figure, str], str]) -> str:
    """Each scorer's test ROC AUC with its 95 % interval, as horizontal bars.

    Args:
        section: `account_section`'s result.
        svg: The report's figure-to-SVG function (`training.report._svg`).
    """
    names = [s["name"] for s in section.scorers]
    values = np.array([s["roc_auc"] for s in section.scorers])
    errors = np.array([[v - s["ci_low"], s["ci_high"] - v] for v, s in zip(values, section.scorers, strict=True)]).T
    colours = ["#1f6fb4" if s["key"] == "account_model" else "#9aa5b1" if s["key"] == "oracle" else "#e08a00"
               for s in section.scorers]  # fmt: skip
    fig, ax = plt.subplots(figsize=(7.0, 0.6 + 0.55 * len(names)))
    positions = np.arange(len(names))[::-1]
    ax.barh(positions, values - 0.5, left=0.5, color=colours, xerr=np.nan_to_num(errors), capsize=4)
    for y, v in zip(positions, values, strict=True):
        ax.text(v + 0.005, y, f"{v:.3f}", va="center", fontsize=8)
    ax.set_yticks(positions, names)
    ax.set_xlim(0.5, min(1.0, float(np.nanmax(values)) + 0.08))
    ax.set_xlabel("ROC AUC on the test accounts (0.5 = chance), with 95 % interval")
    ax.set_title("Which companies convert: account model vs roll-ups of contact scores", fontsize=10)
    return svg(fig, "Account model and roll-ups: ROC AUC on the test accounts")
