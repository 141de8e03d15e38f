"""Settings of the model choice (`training.selection` in the config): families, weightings, folds.

Kept apart from `training.selection` so that `training.config` can hold them without importing
the training code.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Family = Literal["lightgbm", "lightgbm_linear_tree", "linear_bins", "linear_slopes"]
FAMILIES: tuple[Family, ...] = ("lightgbm", "lightgbm_linear_tree", "linear_bins", "linear_slopes")


class Candidate(BaseModel):
    """One family with its settings.

    Attributes:
        family: One of `FAMILIES`.
        half_life: Recency weighting: the weight of a row halves every `half_life` of the
            training span (0.1 = every tenth of the rows); None weighs every row the same.
        c: Inverse L2 strength of the linear families (scikit-learn's C).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    family: Family
    half_life: float | None = Field(default=None, gt=0, le=1)
    c: float = Field(default=0.1, gt=0)

    @property
    def name(self) -> str:
        weighting = "all rows alike" if self.half_life is None else f"half-life {self.half_life:.0%} of the rows"
        return f"{self.family} ({weighting})"


class SelectionConfig(BaseModel):
    """Which candidates training chooses among, and how (`training.selection` in the config).

    Attributes:
        families: Model families (`training.candidates.FAMILIES`).
        half_lives: Recency weightings tried with each family (None: all rows alike).
        n_folds: Rolling-origin validation periods before the test period.
        block_fraction: Each validation period's share of the training rows.
        linear_c: Inverse L2 strength of the linear families.
    """

    model_config = ConfigDict(extra="forbid")

    families: list[Family] = Field(default_factory=lambda: list(FAMILIES), min_length=1)
    half_lives: list[float | None] = Field(default_factory=lambda: [None, 0.25, 0.1], min_length=1)
    n_folds: int = Field(default=3, ge=1, le=10)
    block_fraction: float = Field(default=0.125, gt=0, lt=0.5)
    linear_c: float = Field(default=0.1, gt=0)

    def candidates(self) -> list[Candidate]:
        """Every family with every weighting, today's LightGBM first (it wins ties)."""
        return [Candidate(family=f, half_life=h, c=self.linear_c) for f in self.families for h in self.half_lives]
