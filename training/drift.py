"""The drift guard: how the recent leads differ from the ones the model learns from.

* **adversarial validation** — a small LightGBM learns to tell the older rows (the training
  part) from the recent ones (the test part), cross-fitted over two folds. Its ROC AUC says how
  different they are (0.5: indistinguishable); the features it splits on most, by gain, are the
  ones that changed.
* **out of the training range** — per number, the share of recent rows below the smallest or
  above the largest value of the older rows: a tree model scores them all as the edge of what
  it saw, so a number that keeps growing past it needs a model that extrapolates.

`leadscore train` prints the top shifted features; the static bundle keeps the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
from sklearn.metrics import roc_auc_score

from features.contract import StaticDataset
from features.engine import FeatureRows, lead_attribute_rows
from features.spec import FeatureSpec
from model.bundle import encode_matrix
from training.selection_config import Candidate
from training.static import EvaluationPlan

ADVERSARIAL_PARAMS = {
    "objective": "binary", "learning_rate": 0.1, "num_leaves": 7, "max_depth": 3, "min_child_samples": 50,
    "feature_fraction": 0.8, "verbosity": -1, "deterministic": True, "num_threads": 1,
}  # fmt: skip
ADVERSARIAL_ROUNDS = 100
# A share of recent rows outside the training range worth a line.
OUT_OF_RANGE_SHARE = 0.01
# Adversarial ROC AUC from which old and recent rows differ enough to say so.
SHIFT_AUC = 0.6
TOP = 5
# Families whose score keeps changing past the largest (or smallest) number they were trained on.
EXTRAPOLATING_FAMILIES = ("linear_slopes", "lightgbm_linear_tree")


@dataclass
class DriftReport:
    """What changed between the older and the recent rows.

    Attributes:
        adversarial_auc: Cross-fitted ROC AUC of telling recent rows from older ones.
        shifted: Features by their share of the adversarial model's gain, largest first.
        out_of_range: Number -> share of recent rows outside the older rows' range (those >= 1 %).
    """

    adversarial_auc: float
    shifted: list[tuple[str, float]] = field(default_factory=list)
    out_of_range: dict[str, float] = field(default_factory=dict)

    def lines(self) -> list[str]:
        verdict = "they differ" if self.adversarial_auc >= SHIFT_AUC else "little shift"
        top = ", ".join(f"{name} ({share:.0%})" for name, share in self.shifted[:TOP])
        lines = [f"drift guard: recent vs older rows told apart with ROC AUC {self.adversarial_auc:.3f} ({verdict}); most shifted: {top}"]
        if self.out_of_range:
            shares = ", ".join(f"{name} {share:.1%}" for name, share in sorted(self.out_of_range.items(), key=lambda kv: -kv[1]))
            lines.append(f"drift guard: recent rows outside the training range: {shares}")
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {
            "adversarial_roc_auc": round(self.adversarial_auc, 4),
            "shifted": [{"feature": n, "gain_share": round(s, 4)} for n, s in self.shifted[:TOP]],
            "out_of_range": {k: round(v, 4) for k, v in self.out_of_range.items()},
        }

    def actions(self, candidate: Candidate, served_through: str | None, left_out: Sequence[str] = ()) -> list[dict[str, Any]]:
        """Per top shifted feature (and each number out of the training range), what training did about it.

        Args:
            candidate: The chosen family and settings.
            served_through: Up to when the served model learned, in words ("2025-03-26", "row number 45211").
            left_out: Columns the leakage guard left out before training (clock columns among them).

        Returns:
            Rows of `feature`, `gain_share`, `out_of_range`, `done` (in words).
        """
        extrapolates = candidate.family in EXTRAPOLATING_FAMILIES
        rows = []
        features = dict.fromkeys([name for name, _ in self.shifted[:TOP]] + list(self.out_of_range))
        shares = dict(self.shifted)
        for name in features:
            done = []
            out = self.out_of_range.get(name)
            if out is not None:
                done.append(f"the chosen model ({candidate.family}) carries its trend past the training range" if extrapolates
                            else f"scored as the edge of the training range: the chosen model ({candidate.family}) does not "
                                 "extrapolate")  # fmt: skip
            if candidate.half_life is not None:
                done.append(f"recent leads weigh more (half-life {candidate.half_life:.0%} of the rows)")
            if served_through:
                done.append(f"the served model also learned from the recent leads (up to {served_through})")
            rows.append({"feature": name, "gain_share": round(shares.get(name, 0.0), 4),
                         "out_of_range": None if out is None else round(out, 4),
                         "done": "; ".join(done) or "kept as it is"})  # fmt: skip
        rows.extend({"feature": name, "gain_share": None, "out_of_range": None, "done": "left out before training by the leakage guard"}
                    for name in left_out)  # fmt: skip
        return rows


def _stack(old: FeatureRows, new: FeatureRows) -> FeatureRows:
    return FeatureRows(
        categorical={k: np.concatenate([v, new.categorical[k]]) for k, v in old.categorical.items()},
        numeric={k: np.concatenate([v, new.numeric[k]]) for k, v in old.numeric.items()},
    )


def drift_report(old: FeatureRows, new: FeatureRows, spec: FeatureSpec, seed: int = 0) -> DriftReport:
    """Adversarial validation and out-of-range numbers, older rows against recent ones.

    Args:
        old: Features of the rows the model learns from (the training part).
        new: Features of the recent rows (the test part).
        spec: Feature specification.
        seed: Seed of the folds.
    """
    names = spec.feature_names()
    both = _stack(old, new)
    levels = {c: sorted({v for v in both.categorical[c] if v is not None}) for c in spec.categorical_features()}
    matrix = encode_matrix(both, names, levels)
    n_old = len(next(iter({**old.categorical, **old.numeric}.values())))
    is_new = np.r_[np.zeros(n_old), np.ones(len(matrix) - n_old)]
    fold = np.random.default_rng(seed).integers(0, 2, len(matrix))
    score = np.empty(len(matrix))
    gain = np.zeros(len(names))
    categorical = [names.index(c) for c in spec.categorical_features()]
    for k in (0, 1):
        fit = lgb.train({**ADVERSARIAL_PARAMS, "seed": seed}, lgb.Dataset(matrix[fold != k], is_new[fold != k],
                        feature_name=names, categorical_feature=categorical), ADVERSARIAL_ROUNDS)  # fmt: skip
        score[fold == k] = fit.predict(matrix[fold == k])
        gain += fit.feature_importance("gain")
    shares = gain / gain.sum() if gain.sum() > 0 else gain
    shifted = sorted(zip(names, shares.tolist(), strict=True), key=lambda item: -item[1])
    out_of_range = {}
    for name in spec.feature_names():
        if name in levels:
            continue
        before, after = old.numeric[name], new.numeric[name]
        before, after = before[~np.isnan(before)], after[~np.isnan(after)]
        if before.size and after.size:
            share = float(np.mean((after < before.min()) | (after > before.max())))
            if share >= OUT_OF_RANGE_SHARE:
                out_of_range[name] = share
    return DriftReport(float(roc_auc_score(is_new, score)), shifted, out_of_range)


def static_drift(data: StaticDataset, spec: FeatureSpec, plan: EvaluationPlan, seed: int = 0) -> DriftReport:
    """`drift_report` of an ordered static export: the training part against the test part."""
    train, test = plan.splits[0]
    leads = data.leads.reset_index(drop=True)
    return drift_report(lead_attribute_rows(leads.iloc[train], spec), lead_attribute_rows(leads.iloc[test], spec), spec, seed)
