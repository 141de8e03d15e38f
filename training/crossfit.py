"""Calibration of a model refit on every row, from the same recipe's scores of rows it had not seen.

A model refit on every matured label has no held-out rows of its own, and the measured model's
test scores come from other trees on another score scale. The served model's calibration map,
score scale, tiers and MQL threshold are therefore fit by cross-fitting the refit recipe on the
latest periods (as scikit-learn's `CalibratedClassifierCV(ensemble=False)` does): the most
recent `LATEST_SHARE` of the rows is cut into `FOLDS` consecutive blocks; each block is scored
by the recipe fit on every other row, so that every score the calibration sees comes from a
model of the served recipe that never saw that row. The served model is then the recipe fit on
every row.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

FOLDS = 3
LATEST_SHARE = 0.3
MIN_BLOCK_ROWS = 50

# Fits the recipe on the rows of a boolean mask; returns the raw log-odds of the rows given.
FitOnMask = Callable[[np.ndarray], Callable[[np.ndarray], np.ndarray]]


def latest_blocks(order: np.ndarray, groups: np.ndarray | None = None) -> list[np.ndarray]:
    """Masks of the `FOLDS` consecutive blocks that make up the latest `LATEST_SHARE` of the rows.

    Args:
        order: Per row, when it came (a time or an acquisition order); later is larger.
        groups: Per row, the lead it belongs to: a lead's rows stay in one block. None: one lead a row.

    Returns:
        Non-empty masks over the rows; fewer blocks when there are too few rows.

    Raises:
        ValueError: Fewer than `MIN_BLOCK_ROWS` rows in the latest share.
    """
    n = len(order)
    keys = np.arange(n) if groups is None else groups
    # A group is as late as its earliest row (a lead is placed by its creation).
    first_seen: dict[object, float] = {}
    for key, when in zip(keys.tolist(), np.asarray(order, dtype=np.float64).tolist(), strict=True):
        first_seen[key] = min(first_seen.get(key, when), when)
    ranked = sorted(first_seen, key=lambda k: first_seen[k])
    latest = ranked[int(len(ranked) * (1 - LATEST_SHARE)):]
    rows_latest = np.isin(keys, np.asarray(latest, dtype=keys.dtype)).sum()
    if rows_latest < MIN_BLOCK_ROWS:
        raise ValueError(f"cross-fitted calibration needs at least {MIN_BLOCK_ROWS} recent rows, got {rows_latest}")
    folds = max(1, min(FOLDS, int(rows_latest // MIN_BLOCK_ROWS)))
    return [np.isin(keys, np.asarray(chunk, dtype=keys.dtype)) for chunk in np.array_split(np.asarray(latest, dtype=object), folds)]


def cross_fitted_raw(fit_on: FitOnMask, blocks: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-block raw scores of the recipe on the rows of `blocks`.

    Returns:
        (row positions, their raw log-odds), each position scored by the recipe fit without its block.
    """
    positions, raw = [], []
    for block in blocks:
        predict = fit_on(~block)
        where = np.flatnonzero(block)
        positions.append(where)
        raw.append(np.asarray(predict(where), dtype=np.float64))
    return np.concatenate(positions), np.concatenate(raw)
