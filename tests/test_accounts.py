"""Accounts (issue 15 item 3): simulated buying groups, point-in-time account features, the account
model against the naive roll-ups, `GET /accounts/{account_id}` and the accounts file of `leadscore score`."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.accounts import (
    ACCOUNT_FEATURES,
    account_contacts,
    account_features,
    account_snapshot_times,
    buying_role,
)
from features.snapshots import conversion_labels
from leadscore.cli import app as cli
from model.accounts import load_account_model, score_accounts
from model.bundle import ScoringModel
from model.leadstore import open_lead_store
from simulator.accounts import (
    AccountTruth,
    _account_cell_hazard,
    simulate_accounts,
    true_account_conversion_probability,
    write_account_simulation,
)
from simulator.funnel import simulate

HORIZON = 90.0


@pytest.fixture(scope="module")
def small_sim():
    return simulate_accounts(600, seed=5)


# `account_training` (2,000 simulated accounts, the size the assertions below hold at): tests/conftest.py.


# -- the simulator ---------------------------------------------------------------------------


def test_simulation_is_deterministic_from_its_seed(small_sim) -> None:
    again = simulate_accounts(600, seed=5)
    pd.testing.assert_frame_equal(small_sim.leads, again.leads)
    pd.testing.assert_frame_equal(small_sim.accounts, again.accounts)
    pd.testing.assert_frame_equal(small_sim.truth.accounts, again.truth.accounts)
    other = simulate_accounts(600, seed=6)
    assert not small_sim.accounts["created_at"].equals(other.accounts["created_at"])


def test_accounts_are_buying_groups_of_one_company(small_sim) -> None:
    leads = small_sim.leads[small_sim.leads["account_id"].notna()]
    sizes = leads.groupby("account_id").size()
    assert len(sizes) == 600 and sizes.min() >= 1 and sizes.max() <= 8
    assert sizes.mean() > 1.5  # groups, not single leads
    for column in ("industry", "company_size", "employee_count"):
        assert (leads.groupby("account_id")[column].nunique() == 1).all(), column
    roles = {buying_role(j, s) for j, s in zip(leads["job_role"], leads["seniority"], strict=True)}
    assert roles == {"decision_maker", "champion", "technical", "user"}
    assert (leads["buying_role"] == [buying_role(j, s) for j, s in zip(leads["job_role"], leads["seniority"], strict=True)]).all()


def test_leads_keep_their_own_conversions(small_sim) -> None:
    funnel = simulate(len(small_sim.leads), seed=5)
    pd.testing.assert_series_equal(small_sim.leads["converted_at"], funnel.leads["converted_at"])
    pd.testing.assert_frame_equal(small_sim.interactions, funnel.interactions)
    pd.testing.assert_frame_equal(small_sim.truth.leads, funnel.truth)


def test_oracle_mean_matches_the_observed_account_conversion_rate() -> None:
    sim = simulate_accounts(3000, seed=9)
    snaps = account_snapshot_times(sim.accounts, [0, 14, 30, 60], sim.export_at - pd.Timedelta(days=HORIZON))
    y = conversion_labels(snaps.rename(columns={"account_id": "lead_id"}), sim.accounts.rename(columns={"account_id": "lead_id"}), HORIZON)
    p = true_account_conversion_probability(sim.truth, snaps["account_id"], snaps["as_of"], HORIZON)
    assert 0.05 < y.mean() < 0.4
    assert abs(p.mean() / y.mean() - 1) < 0.12


def _pair_truth(sim, roles: tuple[str, str], which: tuple[bool, bool]) -> AccountTruth:
    """One account whose group is two contacts of the simulation (kept per `which`), created together."""
    lead_ids = sim.truth.leads["lead_id"].iloc[:2].tolist()
    created = sim.truth.leads["created_at"].iloc[0]
    leads = sim.truth.leads.iloc[:2].assign(created_at=created)
    contacts = pd.DataFrame({"lead_id": lead_ids, "account_id": "A-1", "buying_role": list(roles)})[list(which)]
    accounts = pd.DataFrame({"account_id": ["A-1"], "created_at": [created], "fit": [0.0], "fit_hidden": [0.0]})
    return AccountTruth(accounts=accounts, contacts=contacts.reset_index(drop=True), leads=leads)


def test_account_outcome_needs_joint_behaviour(small_sim) -> None:
    """The excess hazard over the floor of two engaged roles together exceeds the two contacts' alone."""

    def excess(truth: AccountTruth) -> float:
        hazard = _account_cell_hazard(truth, np.array([0]), np.array([0.0]), 120)
        floor = _account_cell_hazard(_pair_truth(small_sim, ("user", "user"), (False, False)), np.array([0]), np.array([0.0]), 120)
        return float((hazard - floor).sum())

    roles = ("decision_maker", "champion")
    both = excess(_pair_truth(small_sim, roles, (True, True)))
    first, second = excess(_pair_truth(small_sim, roles, (True, False))), excess(_pair_truth(small_sim, roles, (False, True)))
    assert first > 0 and second > 0
    assert both > 1.5 * (first + second)
    # The same two people as two champions cover less of the group than a decision maker and a champion.
    assert excess(_pair_truth(small_sim, ("champion", "champion"), (True, True))) < both


# -- point-in-time features ------------------------------------------------------------------


def _features(leads: pd.DataFrame, interactions: pd.DataFrame, snapshots: pd.DataFrame) -> dict[str, np.ndarray]:
    contacts = account_contacts(leads, snapshots)
    # A stand-in lead score that depends on the lead only (the features must pass it through as given).
    p = (contacts["lead_id"].str[-3:].astype(int).to_numpy() % 97) / 100.0
    rows = account_features(leads, interactions, snapshots, contacts, p, np.log(p + 0.01), ["industry"], ["employee_count"])
    return {**rows.numeric, **rows.categorical}


@pytest.mark.parametrize("change", ["contact_after_as_of", "event_after_as_of", "event_of_another_account"])
def test_account_features_ignore_the_future(small_sim, change: str) -> None:
    leads, interactions = small_sim.leads, small_sim.interactions
    snaps = account_snapshot_times(small_sim.accounts, [0, 7, 30], small_sim.export_at).head(400).reset_index(drop=True)
    before = _features(leads, interactions, snaps)
    target = snaps.iloc[5]
    later = target["as_of"] + pd.Timedelta(hours=1)
    member = leads[leads["account_id"] == target["account_id"]].iloc[0]
    if change == "contact_after_as_of":
        extra = member.to_frame().T.assign(lead_id="L-999999", created_at=later, seniority="vp", job_role="it")
        leads = pd.concat([leads, extra], ignore_index=True)
        leads["created_at"] = pd.to_datetime(leads["created_at"], utc=True)
    elif change == "event_after_as_of":
        extra = pd.DataFrame({"lead_id": [member["lead_id"]] * 3, "occurred_at": [later] * 3, "type": ["demo_request"] * 3, "channel": ["web"] * 3})
        interactions = pd.concat([interactions, extra], ignore_index=True)
    else:
        outsider = leads[leads["account_id"].notna() & (leads["account_id"] != target["account_id"])].iloc[0]
        extra = pd.DataFrame({"lead_id": [outsider["lead_id"]], "occurred_at": [target["as_of"] - pd.Timedelta(hours=1)], "type": ["pricing_page_view"], "channel": ["web"]})
        interactions = pd.concat([interactions, extra], ignore_index=True)
        snaps = snaps[snaps["account_id"] == target["account_id"]].reset_index(drop=True)
        before = _features(small_sim.leads, small_sim.interactions, snaps)
    after = _features(leads, interactions, snaps)
    for name, values in before.items():
        np.testing.assert_array_equal(values, after[name], err_msg=name)


def test_account_features_count_the_group() -> None:
    t0 = pd.Timestamp("2025-01-01", tz="UTC")
    leads = pd.DataFrame({
        "lead_id": ["a", "b", "c", "d"], "created_at": [t0, t0 + pd.Timedelta(days=1), t0 + pd.Timedelta(days=2), t0 + pd.Timedelta(days=20)],
        "converted_at": pd.to_datetime([None, None, None, None], utc=True), "account_id": ["X", "X", "X", "X"],
        "job_role": ["marketing", "it", "sales", "it"], "seniority": ["vp", "manager", "manager", "intern"],
    })  # fmt: skip
    interactions = pd.DataFrame({"lead_id": ["a", "b", "b", "d"], "type": ["page_view", "page_view", "demo_request", "page_view"],
                                 "occurred_at": [t0 + pd.Timedelta(days=d) for d in (1, 2, 9, 21)]})  # fmt: skip
    snaps = pd.DataFrame({"account_id": ["X"], "as_of": [t0 + pd.Timedelta(days=10)]})
    contacts = account_contacts(leads, snaps)
    assert contacts["lead_id"].tolist() == ["a", "b", "c"]  # d joins later
    f = account_features(leads, interactions, snaps, contacts, np.array([0.1, 0.3, 0.2]), np.array([-2.0, -1.0, -1.5])).numeric
    assert set(f) == set(ACCOUNT_FEATURES)
    expected = {"n_contacts": 3, "n_roles_covered": 3, "has_decision_maker": 1, "has_technical": 1, "has_champion": 1, "has_user": 0,
                "p_max": 0.3, "p_second": 0.2, "p_sum": 0.6, "p_max_technical": 0.3, "n_engaged_7d": 1, "n_engaged_30d": 2,
                "n_events_30d": 3, "n_event_types_total": 2, "days_since_last_event": 1.0, "days_since_first_contact": 10.0,
                "days_since_last_contact": 8.0, "n_senior_contacts": 1, "max_seniority_rank": 4}  # fmt: skip
    for name, value in expected.items():
        assert f[name][0] == pytest.approx(value), name
    assert f["p_noisy_or"][0] == pytest.approx(1 - 0.9 * 0.7 * 0.8)


# -- the account model -----------------------------------------------------------------------


def test_account_model_beats_the_roll_ups_on_the_same_test_accounts(account_training) -> None:
    _sim, _data, result = account_training
    auc = {name: m["roc_auc"]["value"] for name, m in result.metrics.items()}
    assert set(auc) == {"account_model", "max_rollup", "noisy_or_rollup", "oracle"}
    assert auc["account_model"] > auc["max_rollup"] and auc["account_model"] > auc["noisy_or_rollup"]
    assert auc["account_model"] <= auc["oracle"] + 0.01
    assert result.gains["max_rollup"]["value"] == pytest.approx(auc["account_model"] - auc["max_rollup"])
    # Time split: test accounts start after every account the model learned from, labels matured.
    test_start = pd.Timestamp(result.split["test_start"])
    horizon = pd.Timedelta(days=HORIZON)
    assert (result.train.snapshots["as_of"] + horizon <= pd.Timestamp(result.split["valid_start"])).all()
    assert not set(result.test.snapshots["account_id"]) & set(result.train.snapshots["account_id"])
    created = result.test.snapshots["account_id"].map(_sim.accounts.set_index("account_id")["created_at"])
    assert (created >= test_start).all()


def test_account_model_round_trip(account_training, tmp_path: Path) -> None:
    _sim, _data, result = account_training
    result.model.save(tmp_path)
    loaded = load_account_model(tmp_path)
    assert loaded is not None
    np.testing.assert_allclose(loaded.probability(loaded.matrix(result.test.rows)), result.test.scores["account_model"])
    assert loaded.meta.categorical_levels == result.model.meta.categorical_levels
    (tmp_path / "accounts_model.txt").unlink()
    with pytest.raises(ValueError, match="accounts_model.txt is missing"):
        load_account_model(tmp_path)


def test_the_served_account_model_learns_from_every_matured_account(account_training, tmp_path: Path) -> None:
    from training.accounts import refit_account_model
    from training.config import ProjectConfig

    sim, data, result = account_training
    config = ProjectConfig()
    config.training.seed = 3  # as the fixture's measured run
    served = refit_account_model(result, data.leads, data.interactions, config.features, config.training, data.data_end, sim.accounts)
    trained, measured = served.meta.training["served"], result.model.meta
    cutoff = data.data_end - pd.Timedelta(days=HORIZON)
    assert trained["labels_through"] == cutoff.isoformat()
    # It learned from the test period's accounts too, never from a label still open at the data end.
    assert pd.Timestamp(result.split["test_start"]) < pd.Timestamp(trained["trained_through"]) <= cutoff
    assert trained["n_snapshots"] >= measured.training["n_fit_snapshots"] + len(result.test.y)
    # The measured settings carry over; the figures stay the measured model's.
    assert served.booster.current_iteration() == measured.training["trees"]
    assert served.meta.calibration == measured.calibration and served.meta.tiers == measured.tiers
    assert served.meta.metrics == measured.metrics and served.meta.feature_names == measured.feature_names
    p = served.probability(served.matrix(result.test.rows))
    assert ((p > 0) & (p < 1)).all()
    assert pd.Series(p).corr(pd.Series(result.test.scores["account_model"]), method="spearman") > 0.8
    loaded = load_account_model(served.save(tmp_path))
    assert loaded is not None and loaded.meta.training["served"] == trained
    np.testing.assert_allclose(loaded.probability(loaded.matrix(result.test.rows)), p)


def test_train_saves_the_refit_account_model_and_says_both_windows(account_training) -> None:
    from training.accounts import train_accounts_for_bundle
    from training.config import ProjectConfig

    _sim, data, _measured = account_training
    config = ProjectConfig()
    config.training.n_bootstrap, config.training.seed = 50, 3
    said: list[str] = []
    result = train_accounts_for_bundle(data, config.features, config.training, None, said.append)
    assert result is not None
    served = result.model.meta.training["served"]
    assert any("served model refit on" in line and served["labels_through"][:10] in line for line in said), said
    # No accounts.csv here: an account converts with its first converted contact. The figures the
    # bundle keeps are the measured model's, on its test accounts (which the refit then learned from).
    assert result.model.meta.metrics == {n: {m: v["value"] for m, v in ms.items()} for n, ms in result.metrics.items()}
    assert pd.Timestamp(served["trained_through"]) > pd.Timestamp(result.split["test_start"])


# -- shipping: the endpoint and the accounts file --------------------------------------------


@pytest.fixture(scope="module")
def account_bundle(trained_bundle: Path, account_training, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's lead bundle with the account model beside it."""
    folder = tmp_path_factory.mktemp("account_bundle") / "bundle"
    shutil.copytree(trained_bundle, folder)
    account_training[2].model.save(folder)
    return folder


@pytest.fixture(scope="module")
def store_url(lead_store_url) -> str:
    return lead_store_url("accounts")


@pytest.fixture(scope="module")
async def client(account_bundle: Path, start_service, store_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with start_service(account_bundle, LEADSCORE_LEAD_STORE=store_url) as http:
        yield http


def test_a_bundle_without_an_account_model_loads_as_before(trained_bundle: Path) -> None:
    assert load_account_model(trained_bundle) is None
    ScoringModel.load(trained_bundle)


@pytest.mark.anyio
async def test_account_endpoint_scores_the_stored_group(client: httpx.AsyncClient, account_bundle: Path, account_training, store_url: str) -> None:
    sim, data, _result = account_training
    sizes = data.leads.groupby("account_id").size()
    account_id = str(sizes[sizes >= 3].index[0])
    members = data.leads[data.leads["account_id"] == account_id]
    events = data.interactions[data.interactions["lead_id"].isin(members["lead_id"])]
    lead_model = ScoringModel.load(account_bundle)
    store = open_lead_store(store_url)
    for row in members.itertuples(index=False):
        attributes = {c: getattr(row, c) for c in lead_model.spec.attribute_columns()}
        attributes = {k: (v.item() if hasattr(v, "item") else v) for k, v in attributes.items()}
        store.upsert_lead(row.lead_id, attributes, account_id=account_id, created_at=row.created_at.to_pydatetime(), observed_at=row.created_at.to_pydatetime())
        mine = events[events["lead_id"] == row.lead_id]
        store.add_interactions(row.lead_id, [(f"{row.lead_id}-{i}", e.type, e.occurred_at.to_pydatetime(), None) for i, e in enumerate(mine.itertuples())])
    as_of = members["created_at"].max() + pd.Timedelta(days=5)

    answer = await client.get(f"/accounts/{account_id}", params={"as_of": as_of.isoformat()})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["account_id"] == account_id and 0 < body["probability"] < 1 and body["tier"] in {"hot", "warm", "cold"}
    assert sorted(c["lead_id"] for c in body["contacts"]) == sorted(members["lead_id"])
    contributions = [c["contribution"] for c in body["contacts"]]
    assert contributions == sorted(contributions, reverse=True)
    assert 1 <= len(body["reasons"]) <= 3
    # The service answers what the batch path gives the same tables.
    account_model = load_account_model(account_bundle)
    assert account_model is not None
    direct = score_accounts(account_model, lead_model, members, events, as_of, [account_id])[0]
    assert body["probability"] == pytest.approx(direct.probability, abs=1e-6)
    assert [c["lead_id"] for c in body["contacts"]] == [c.lead_id for c in direct.contacts]

    earlier = await client.get(f"/accounts/{account_id}", params={"as_of": (members["created_at"].min() + pd.Timedelta(seconds=1)).isoformat()})
    assert earlier.status_code == 200 and len(earlier.json()["contacts"]) < len(members)

    missing = await client.get("/accounts/no-such-account")
    assert missing.status_code == 404
    assert missing.json()["error"] == "Not Found" and missing.json()["detail"][0]["type"] == "unknown_account"
    documented = (await client.get("/docs.json")).json()["paths"]
    assert "/accounts/{account_id}" in documented and "404" in documented["/accounts/{account_id}"]["get"]["responses"]


def test_score_writes_an_accounts_file(account_bundle: Path, account_training, tmp_path: Path) -> None:
    sim, data, _result = account_training
    write_account_simulation(sim, tmp_path / "data")
    out = tmp_path / "scores.csv"
    as_of = (sim.export_at - pd.Timedelta(days=1)).isoformat()
    result = CliRunner().invoke(cli, ["score", "--input", str(tmp_path / "data"), "--bundle", str(account_bundle), "--out", str(out),
                                      "--as-of", as_of, "--no-reasons"])  # fmt: skip
    assert result.exit_code == 0, result.output
    accounts = pd.read_csv(tmp_path / "scores_accounts.csv")
    known = data.leads[data.leads["created_at"] <= pd.Timestamp(as_of)]
    assert len(accounts) == known["account_id"].nunique() < data.leads["account_id"].nunique()  # accounts not yet begun are left out
    assert accounts["probability"].between(0, 1).all()
    assert set(accounts["call_first"]) <= set(data.leads["lead_id"])
    leads = pd.read_csv(out)
    assert len(leads) == len(known)
