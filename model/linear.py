"""An additive logistic model stored as JSON: one-hot categories, binned or linear numbers.

It reads the same model matrix as LightGBM (`model.bundle.encode_matrix`: float64, a category
as the code of its training level, NaN for missing or unseen), so a bundle scores and explains
through `ScoringModel` whichever family won. Every feature adds one term to the log-odds:

* a **category**: a weight per training level (an unseen or missing value adds the weight of
  `missing`, 0 unless training kept missing as a level);
* a **number, binned**: a weight per interval between `edges` (flat beyond the outer edges),
  and a weight for missing;
* a **number, linear**: `slope * (transform(value) - center) / scale`, where transform is the
  signed log1p of `log1p: true`; it extrapolates beyond the training range. Missing adds
  `missing`.

A lead's exact reasons are its terms minus their training means (`reference`): the
contributions of `predict(pred_contrib=True)` add up, with the base value, to the raw score, as
LightGBM's TreeSHAP contributions do. No pickle: `to_json` / `from_json` are the whole state.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

LINEAR_FAMILY: Literal["linear"] = "linear"


class LinearTerm(BaseModel):
    """One feature's term of the log-odds (module docstring)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["category", "bins", "linear"]
    weights: list[float] = Field(default_factory=list, description="Per level (category) or per bin (bins)")
    edges: list[float] = Field(default_factory=list, description="Bin edges (bins): bin i is (edges[i-1], edges[i]]")
    slope: float = 0.0
    center: float = 0.0
    scale: float = 1.0
    log1p: bool = False
    missing: float = 0.0
    reference: float = Field(0.0, description="The term's mean over the training rows")

    def values(self, column: NDArray[Any]) -> NDArray[Any]:
        """The term for each value of its column of the model matrix."""
        column = np.asarray(column, dtype=np.float64)
        out = np.full(column.shape, self.missing, dtype=np.float64)
        known = ~np.isnan(column)
        if self.kind == "category":
            codes = column[known].astype(np.int64)
            table = np.asarray(self.weights, dtype=np.float64)
            inside = (codes >= 0) & (codes < len(table))
            out[np.flatnonzero(known)[inside]] = table[codes[inside]]
        elif self.kind == "bins":
            bins = np.searchsorted(np.asarray(self.edges), column[known], side="left")
            out[known] = np.asarray(self.weights, dtype=np.float64)[bins]
        else:
            x = column[known]
            if self.log1p:
                x = np.sign(x) * np.log1p(np.abs(x))
            out[known] = self.slope * (x - self.center) / self.scale
        return out


class LinearModel(BaseModel):
    """The additive logistic model: an intercept and one term per feature, in model-matrix order.

    Its `predict`, `num_feature`, `feature_importance` and `save_model` answer as a LightGBM
    booster's do, so that `ScoringModel` scores and explains it the same way.
    """

    model_config = ConfigDict(extra="forbid")

    family: Literal["linear"] = LINEAR_FAMILY
    feature_names: list[str]
    intercept: float
    terms: list[LinearTerm]
    settings: dict[str, float | str | None] = Field(default_factory=dict, description="How it was fit (for people)")

    def num_feature(self) -> int:
        return len(self.terms)

    def term_matrix(self, matrix: NDArray[Any]) -> NDArray[Any]:
        """Each row's term per feature (rows x features), before the reference is taken off."""
        matrix = np.asarray(matrix, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[1] != len(self.terms):
            raise ValueError(f"linear model: a matrix of {len(self.terms)} columns is needed, got shape {matrix.shape}")
        return np.column_stack([term.values(matrix[:, j]) for j, term in enumerate(self.terms)]) if self.terms else np.zeros((len(matrix), 0))

    def predict(
        self, matrix: NDArray[Any], raw_score: bool = False, pred_contrib: bool = False, num_threads: int = 0
    ) -> NDArray[Any]:
        """Raw log-odds, probabilities or exact contributions, as LightGBM's `Booster.predict`.

        Args:
            matrix: The model matrix (rows x features).
            raw_score: Log-odds instead of probabilities.
            pred_contrib: Per feature, its term minus its training mean; the last column is the
                base value (intercept plus the means). Each row sums to its log-odds.
            num_threads: Ignored (numpy); accepted for LightGBM's signature.
        """
        del num_threads
        terms = self.term_matrix(matrix)
        if pred_contrib:
            reference = np.array([t.reference for t in self.terms], dtype=np.float64)
            base = self.intercept + float(reference.sum())
            return np.column_stack([terms - reference, np.full(len(terms), base)])
        raw: NDArray[Any] = self.intercept + terms.sum(axis=1)
        return raw if raw_score else 1.0 / (1.0 + np.exp(-raw))

    def feature_importance(self, importance_type: str = "gain") -> NDArray[Any]:
        """How far each term can move the log-odds: the range of its weights (linear: 2 x |slope|, one scale each way)."""
        del importance_type
        spans = []
        for term in self.terms:
            if term.kind == "linear":
                spans.append(abs(term.slope) * 2.0)
            else:
                values = [*term.weights, term.missing]
                spans.append(max(values) - min(values) if values else 0.0)
        return np.asarray(spans, dtype=np.float64)

    def model_to_string(self) -> str:
        return self.model_dump_json(indent=1)

    def save_model(self, filename: str | Path) -> None:
        Path(filename).write_text(self.model_to_string())

    @classmethod
    def load(cls, filename: str | Path) -> LinearModel:
        """Read a saved model; errors name the file."""
        path = Path(filename)
        try:
            return cls.model_validate(json.loads(path.read_text()))
        except (OSError, ValueError) as error:
            raise ValueError(f"linear model {path}: cannot read it: {error}") from error
