"""Snapshots (lead, as_of) and their labels: where time is respected.

A training row is a snapshot of a lead at `created_at + offset`, taken only while the lead is
still unconverted. Its label is "converted in (as_of, as_of + horizon]", and it is usable only
once that window has closed before the data ends (a matured label).

A lead has two observation ends. Its events are recorded until `observed_until` (an export
cut to each lead's first 30 days; NaT or no column: the data end): no snapshot is taken after
it, since the features would see a lead "go quiet" where only the export stopped. Its outcome
(the leads' outcome column or an outcome table such as deals) is recorded until the data end
(the export time), so a label matures when `as_of + horizon <= data end`, for every lead alike.
A lead observed only 30 days whose deal closed on day 75 therefore has its day-30 snapshot
labelled 1: the deal table saw the close, and the features of that snapshot need no event after
day 30. Maturing labels against `observed_until` instead would leave no label of a 30-day window
with a 90-day horizon, and would drop outcomes the export did record. An export whose outcome
record also stops at each lead's own end ("converted within 90 days of creation") needs offsets
and a horizon inside that record (offset + horizon_days <= its length): a window cannot be
checked against an outcome the export does not hold.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

DEFAULT_OFFSETS_DAYS: tuple[int, ...] = (0, 7, 14, 30, 60, 90)
DEFAULT_HORIZON_DAYS = 90
OBSERVED_UNTIL = "observed_until"


def matured_label_cutoff(data_end: pd.Timestamp, horizon_days: float) -> pd.Timestamp:
    """Latest as_of whose label window (as_of, as_of + horizon] has closed by `data_end`."""
    return data_end - pd.Timedelta(days=horizon_days)


def snapshot_times(
    leads: pd.DataFrame,
    offsets_days: Sequence[float],
    latest_as_of: pd.Timestamp,
) -> pd.DataFrame:
    """Snapshots at each offset after creation, while the lead is unconverted.

    Args:
        leads: `lead_id`, `created_at`, `converted_at` (UTC; NaT when not converted), and
            optionally `observed_until` (UTC): the end of the lead's recorded interactions, after
            which no snapshot is taken (NaT: no such end). It limits snapshots, not label
            windows (see the module docstring).
        offsets_days: Days after creation at which to take a snapshot.
        latest_as_of: No snapshot later than this (use `matured_label_cutoff` for training: the
            label windows then close by the data end, where the outcome record ends).

    Returns:
        `lead_id`, `as_of` (UTC), `offset_days`, sorted by lead then time.
    """
    parts = []
    # An export that keeps each lead's events for a window only: a snapshot after the window
    # would see a lead that went quiet, which is the export's cut, not the lead's behaviour.
    observed_until = leads.get(OBSERVED_UNTIL)
    for offset in sorted(set(offsets_days)):
        as_of = leads["created_at"] + pd.Timedelta(days=offset)
        keep = (as_of <= latest_as_of) & ~(leads["converted_at"] <= as_of)
        if observed_until is not None:
            keep &= ~(as_of > observed_until)
        parts.append(
            pd.DataFrame(
                {
                    "lead_id": leads.loc[keep, "lead_id"].to_numpy(),
                    "as_of": as_of[keep].to_numpy(),
                    "offset_days": float(offset),
                }
            )
        )
    frame = pd.concat(parts, ignore_index=True)
    frame["as_of"] = pd.to_datetime(frame["as_of"], utc=True)
    return frame.sort_values(["lead_id", "as_of"], kind="stable").reset_index(drop=True)


def conversion_labels(
    snapshots: pd.DataFrame, leads: pd.DataFrame, horizon_days: float
) -> np.ndarray:
    """1 when the lead converted in (as_of, as_of + horizon], else 0.

    Args:
        snapshots: `lead_id`, `as_of`.
        leads: `lead_id`, `converted_at`.
        horizon_days: Label window length.
    """
    converted = pd.Series(leads["converted_at"].to_numpy(), index=leads["lead_id"].to_numpy())
    conv = pd.to_datetime(converted.reindex(snapshots["lead_id"].to_numpy()).to_numpy(), utc=True)
    as_of = pd.DatetimeIndex(snapshots["as_of"])
    end = as_of + pd.Timedelta(days=horizon_days)
    hit = (conv > as_of) & (conv <= end)
    return np.asarray(hit, dtype=np.int8)
