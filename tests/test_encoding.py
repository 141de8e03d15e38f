"""Encoding a batch through `FeatureRows`' hints (category codes, the behaviour block) gives the matrix its values give."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.engine import FeatureRows, snapshot_features
from features.spec import FeatureSpec
from model.bundle import _ENCODE_BLOCK_ROWS, MISSING_LEVEL, encode_matrix

SPEC = FeatureSpec(categorical=["industry", "source"], numeric=["employee_count"], email_column="email")
T0 = pd.Timestamp("2024-01-01T00:00:00Z")


def _world(n_leads: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    industries = np.array(["software", "retail", "mining", None], dtype=object)  # mining: unseen at training
    sources = np.array(["referral", "social", None], dtype=object)
    emails = np.array(["ana@acme.com", "bo@gmail.com", "n/a", None, "x1@mailinator.com"], dtype=object)
    leads = pd.DataFrame({
        "lead_id": [f"L{i}" for i in range(n_leads)],
        "created_at": T0 + pd.to_timedelta(rng.integers(0, 30, n_leads), unit="D"),
        "converted_at": pd.NaT,
        "email": emails[rng.integers(0, len(emails), n_leads)],
        "industry": industries[rng.integers(0, len(industries), n_leads)],
        "source": sources[rng.integers(0, len(sources), n_leads)],
        "employee_count": np.where(rng.random(n_leads) < 0.2, np.nan, rng.integers(1, 500, n_leads)),
    })  # fmt: skip
    n_events = 5 * n_leads
    interactions = pd.DataFrame({
        "lead_id": leads["lead_id"].to_numpy()[rng.integers(0, n_leads, n_events)],
        "occurred_at": T0 + pd.to_timedelta(rng.integers(0, 60 * 86_400, n_events), unit="s"),
        "type": rng.choice(["page_view", "demo_request", "email_open"], n_events),
    }).sort_values(["lead_id", "occurred_at"], ignore_index=True)  # fmt: skip
    # Each lead now and once more 10 days later: codes of a lead repeated over its snapshots.
    as_of = T0 + pd.Timedelta(days=40)
    snapshots = pd.DataFrame({"lead_id": np.tile(leads["lead_id"].to_numpy(), 2), "as_of": np.repeat([as_of, as_of + pd.Timedelta(days=10)], n_leads)})
    return leads, interactions, snapshots


LEVELS = {
    "industry": ["retail", "software"],
    "source": ["social", MISSING_LEVEL, "referral"],  # missing kept as a level of its own
    "email_domain_kind": ["free", "corporate", "invalid"],  # disposable: unseen
}


@pytest.mark.parametrize("n_leads", [3, _ENCODE_BLOCK_ROWS + 11])
@pytest.mark.parametrize("order", ["model", "shuffled"])
def test_hinted_rows_encode_as_their_values(n_leads: int, order: str) -> None:
    leads, interactions, snapshots = _world(n_leads, seed=n_leads)
    rows = snapshot_features(leads, interactions, snapshots, SPEC)
    assert rows.category_codes and rows.behaviour is not None  # the hints the batch path uses
    names = SPEC.feature_names()
    if order == "shuffled":  # the behaviour block is then not the matrix's tail
        names = list(np.random.default_rng(0).permutation(names))
    plain = FeatureRows(rows.categorical, rows.numeric)
    hinted = encode_matrix(rows, names, LEVELS)
    np.testing.assert_array_equal(hinted, encode_matrix(plain, names, LEVELS))
    # The hints hold what the values say: each category's code reads back its value.
    for name, (codes, distinct) in rows.category_codes.items():
        assert list(distinct[codes]) == list(rows.categorical[name])


def test_the_hints_reach_unseen_and_missing_values() -> None:
    leads, interactions, snapshots = _world(200, seed=3)
    rows = snapshot_features(leads, interactions, snapshots, SPEC)
    matrix = encode_matrix(rows, SPEC.feature_names(), LEVELS)
    names = SPEC.feature_names()
    industry = matrix[:, names.index("industry")]
    values = rows.categorical["industry"]
    # Unseen (mining) and missing industries are NaN; missing sources take the missing level's code.
    assert np.isnan(industry[(values == "mining") | pd.isna(values)]).all()
    assert set(industry[values == "software"]) == {1.0}
    source = matrix[:, names.index("source")]
    assert set(source[pd.isna(rows.categorical["source"])]) == {1.0}
    kinds = rows.categorical["email_domain_kind"]
    assert np.isnan(matrix[:, names.index("email_domain_kind")][kinds == "disposable"]).all()
