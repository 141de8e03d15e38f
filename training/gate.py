"""The promotion gate: the one rule every path (`train`, `retrain`, static exports) applies.

A new model becomes `champion` only when, on the same test rows:

1. the lower end of its bootstrap ROC AUC interval is above 0.5 (it ranks better than chance,
   beyond noise);
2. it is not below the best baseline (the point grid, the logistic regression) by more than
   `baseline_tolerance`;
3. it is not below the current champion, nor the best champion so far, by more than the
   champion tolerance (0 for `train`: it must be better; `retrain` allows a little less for
   fresher data). Both champions are re-scored on the new model's test rows. The best champion
   is the version whose promotion raised the bar (a registered-model tag), so a chain of
   retrains, each a little worse than the last, cannot walk the AUC down: every promoted model
   is within one tolerance of the best one.

"No champion yet" waives only rule 3. `--force` promotes anyway and is recorded as a tag.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

BASELINES = {"point_grid": "grid", "logistic_regression": "logistic regression"}
# Registered-model tag: the version whose promotion set the bar the champion tolerance is measured from.
BEST_CHAMPION_TAG = "best_champion_version"
# Run tag set when `--force` promoted a model the gate refused.
FORCED_TAG = "registry.forced"
# "Better" means better by more than noise: re-scoring the same model can flip a few tied
# ranks and move the AUC by about one pair in a million.
AUC_EPSILON = 1e-6


class GateConfig(BaseModel):
    """Settings of the promotion gate (`training.gate` in the config file).

    Attributes:
        baseline_tolerance: ROC AUC the model may be below the best baseline (grid, logistic
            regression) on the same rows and still be promoted.
        chance_auc: The lower end of the model's ROC AUC interval must be above this.
    """

    model_config = ConfigDict(extra="forbid")

    baseline_tolerance: float = Field(default=0.005, ge=0, le=0.1)
    chance_auc: float = Field(default=0.5, ge=0, lt=1)


@dataclass(frozen=True)
class ChampionOnRows:
    """A registered version re-scored on the new model's test rows.

    A served champion learned from every matured label of its export, so it is scored only on
    the test rows it never saw (`rows`); the new model is compared on those rows too
    (`challenger_auc`, None when they are all the test rows).

    Attributes:
        version: Its registry version.
        roc_auc: Its ROC AUC on those rows; NaN when it cannot be scored on them.
        not_comparable: Why it cannot be scored on them (then the gate refuses).
        challenger_auc: The new model's ROC AUC on the same rows, when they are a part of its test rows.
        rows: Those rows in words, e.g. "1,204 test snapshots of leads created after 2025-03-01".
    """

    version: str
    roc_auc: float
    not_comparable: str = ""
    challenger_auc: float | None = None
    rows: str = ""


@dataclass(frozen=True)
class GateEvidence:
    """What the gate decides on; every figure is measured on the same test rows.

    Attributes:
        model_auc: The new model's ROC AUC.
        model_ci_low: Lower end of its bootstrap 95 % interval (NaN without bootstrap).
        baselines: Baseline name (`BASELINES`) -> its ROC AUC.
        champion: The current champion, or None when there is none.
        best_champion: The best champion so far, when it is not the current one.
    """

    model_auc: float
    model_ci_low: float
    baselines: dict[str, float]
    champion: ChampionOnRows | None = None
    best_champion: ChampionOnRows | None = None


@dataclass(frozen=True)
class GateDecision:
    """Whether the model is promoted, why (one line), and which version now sets the bar."""

    promote: bool
    reason: str
    refusals: list[str] = field(default_factory=list)
    forced: bool = False
    raises_bar: bool = False


def gate_evidence(
    metrics: dict[str, dict[str, dict[str, float]]],
    champion: ChampionOnRows | None = None,
    best_champion: ChampionOnRows | None = None,
) -> GateEvidence:
    """The gate's evidence from a run's metrics (scorer -> metric -> value, ci_low, ci_high).

    Raises:
        ValueError: The metrics lack the model's or a baseline's ROC AUC.
    """
    missing = [name for name in ("model", *BASELINES) if "roc_auc" not in metrics.get(name, {})]
    if missing:
        raise ValueError(f"promotion gate: the run's metrics have no roc_auc for {missing}")
    model = metrics["model"]["roc_auc"]
    return GateEvidence(
        model_auc=float(model["value"]),
        model_ci_low=float(model.get("ci_low", math.nan)),
        baselines={name: float(metrics[name]["roc_auc"]["value"]) for name in BASELINES},
        champion=champion,
        best_champion=best_champion,
    )


def gate_decision(
    evidence: GateEvidence,
    config: GateConfig,
    *,
    champion_tolerance: float = 0.0,
    force: bool = False,
) -> GateDecision:
    """Apply the gate's rules (module docstring) and say the outcome in one line.

    Args:
        evidence: The figures, on the same test rows.
        config: Baseline tolerance and the chance level.
        champion_tolerance: ROC AUC the model may be below the current (and the best) champion:
            0 means it must be better.
        force: Promote even when a rule refuses (the refusals stay in the reason).

    Returns:
        The decision; `reason` reads e.g. "not promoted: model 0.411 < logistic regression
        0.740 - 0.005; champion stays version 3".
    """
    auc = evidence.model_auc
    refusals = []
    if math.isnan(evidence.model_ci_low):
        refusals.append(f"model ROC AUC {auc:.3f} has no interval (training.n_bootstrap is 0): chance cannot be ruled out")
    elif evidence.model_ci_low <= config.chance_auc:
        refusals.append(
            f"model {auc:.3f} (95 % interval from {evidence.model_ci_low:.3f}) is not above chance ({config.chance_auc:g})"
        )
    best_name = max(evidence.baselines, key=evidence.baselines.__getitem__)
    best_auc = evidence.baselines[best_name]
    if auc < best_auc - config.baseline_tolerance:
        refusals.append(
            f"model {auc:.3f} < {BASELINES[best_name]} {best_auc:.3f} - {config.baseline_tolerance:g} "
            "(training.gate.baseline_tolerance)"
        )
    for role, rival in (("champion", evidence.champion), ("best champion", evidence.best_champion)):
        if rival is None:
            continue
        if rival.not_comparable:
            refusals.append(f"{role} version {rival.version} cannot be compared on the same rows: {rival.not_comparable}")
            continue
        mine = auc if rival.challenger_auc is None else rival.challenger_auc
        where = f"on {rival.rows}" if rival.rows else "on the same rows"
        if champion_tolerance == 0:
            beaten = mine > rival.roc_auc + AUC_EPSILON
            rule = f"model {mine:.3f} does not beat {role} version {rival.version} ({rival.roc_auc:.3f}) {where}"
        else:
            beaten = mine >= rival.roc_auc - champion_tolerance
            rule = (
                f"model {mine:.3f} < {role} version {rival.version} {rival.roc_auc:.3f} - {champion_tolerance:g} "
                f"{where} (--tolerance)"
            )
        if not beaten:
            refusals.append(rule)
    stays = f"champion stays version {evidence.champion.version}" if evidence.champion else "no champion is set"
    figures = f"model {auc:.3f}, " + ", ".join(f"{BASELINES[n]} {v:.3f}" for n, v in evidence.baselines.items())
    if evidence.champion is not None and not evidence.champion.not_comparable:
        figures += f", champion version {evidence.champion.version} {evidence.champion.roc_auc:.3f}"
    margins = [
        (auc if r.challenger_auc is None else r.challenger_auc) - r.roc_auc
        for r in (evidence.champion, evidence.best_champion)
        if r is not None and not r.not_comparable
    ]
    raises_bar = not margins or min(margins) > AUC_EPSILON
    if not refusals:
        return GateDecision(True, f"promoted: {figures} on the same rows", [], False, raises_bar)
    if force:
        return GateDecision(True, f"promoted by --force although {'; '.join(refusals)}", refusals, True, raises_bar)
    return GateDecision(False, f"not promoted: {'; '.join(refusals)}; {stays}", refusals)
