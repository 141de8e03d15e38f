"""A lead's trend: its score now against 7 and 30 days before, from its own history cut at each instant.

The three scores come from the one feature definition (`features.engine.behaviour_matrix`) at
three `as_of`s, so events after an instant are unseen there, and a lead not yet created at an
instant has no score there. The label compares the score now with the score 7 days before:

- improving: the 7-day change is at least `TrendThresholds.improving_at` points;
- declining: it is at most `TrendThresholds.declining_at` points;
- steady otherwise, and always when the score did not move.

Training sets both thresholds on the validation snapshots (`training.trend`): the 7-day score
changes of the snapshots whose lead existed 7 days before; `improving_at` is the
(1 - `TREND_TAIL_SHARE`) quantile of those changes, `declining_at` the `TREND_TAIL_SHARE`
quantile, each at least one point away from zero. So a fifth of validation leads, or fewer when
a quantile lies within a point of zero (most leads' scores sink as they age without activity),
rise enough to be "improving", as many fall enough to be "declining", and a lead whose score did
not change is steady whatever the distribution. This module depends on nothing of the project.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

SECONDS_PER_DAY = 86_400
TREND_PAST_DAYS: tuple[int, int] = (7, 30)  # the instants before `as_of` a lead is scored at too
TREND_LABEL_DAYS = 7  # the change that sets the label: score now minus score 7 days before
TREND_TAIL_SHARE = 0.2  # share of validation changes in each of the improving and declining tails
TrendLabel = Literal["improving", "steady", "declining"]
TREND_LABELS: tuple[TrendLabel, TrendLabel, TrendLabel] = ("improving", "steady", "declining")


class TrendThresholds(BaseModel):
    """Where a lead's 7-day score change makes it improving or declining, set on validation.

    Attributes:
        improving_at: Change in score points (0-100 scale) at or above which a lead is improving (>= 1).
        declining_at: Change at or below which it is declining (<= -1).
        tail_share: The quantile share each threshold was taken at (`TREND_TAIL_SHARE`).
        n_reference: Validation snapshots whose change the thresholds come from.
    """

    model_config = ConfigDict(extra="forbid")

    improving_at: int = Field(ge=1)
    declining_at: int = Field(le=-1)
    tail_share: float = Field(gt=0, lt=0.5)
    n_reference: int = Field(ge=1)

    def label(self, now: int, before: int | None) -> TrendLabel | None:
        """The trend of one lead from its score now and 7 days before (None: it did not exist then)."""
        if before is None:
            return None
        change = now - before
        return "improving" if change >= self.improving_at else ("declining" if change <= self.declining_at else "steady")

    def label_codes(self, now: NDArray[Any], before: NDArray[Any]) -> NDArray[Any]:
        """`label` of many leads, as codes into `TREND_LABELS` (-1 where `before` is negative: no score then).

        Args:
            now: Scores now (int).
            before: Scores 7 days before, -1 where the lead did not exist.
        """
        change = np.asarray(now, dtype=np.int64) - np.asarray(before, dtype=np.int64)
        codes = np.where(change >= self.improving_at, 0, np.where(change <= self.declining_at, 2, 1))
        codes[np.asarray(before) < 0] = -1
        return codes.astype(np.int8)


def trend_thresholds_from_changes(changes: NDArray[Any], tail_share: float = TREND_TAIL_SHARE) -> TrendThresholds | None:
    """The thresholds from the 7-day score changes of reference (validation) snapshots: the module's rule.

    Args:
        changes: Score now minus score 7 days before, one per snapshot whose lead existed then.
        tail_share: Share of changes in each tail.

    Returns:
        The thresholds; None when there is no change to set them from.
    """
    changes = np.asarray(changes, dtype=np.float64)
    if changes.size == 0:
        return None
    low, high = np.quantile(changes, [tail_share, 1.0 - tail_share])
    return TrendThresholds(
        improving_at=max(1, math.ceil(float(high))),
        declining_at=min(-1, math.floor(float(low))),
        tail_share=tail_share,
        n_reference=int(changes.size),
    )


def past_instants(as_of_s: NDArray[Any]) -> NDArray[Any]:
    """The instants each lead is scored at for its trend: (len(TREND_PAST_DAYS), n) epoch seconds, 7 then 30 days before."""
    as_of_s = np.asarray(as_of_s, dtype=np.int64)
    return np.stack([as_of_s - days * SECONDS_PER_DAY for days in TREND_PAST_DAYS])


def past_instants_each(as_of_s: list[int]) -> list[list[int]]:
    """`past_instants` of a few leads' times as Python ints (a request's lead): the same instants, without numpy's calls."""
    return [[t - days * SECONDS_PER_DAY for t in as_of_s] for days in TREND_PAST_DAYS]
