"""The batch scorer (`score_table`, vectorised features) gives each lead what `score_lead` gives it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from leadscore.cli import app
from model.scoring import TABLE_COLUMNS, LeadIn, score_lead, score_table
from training.config import ProjectConfig


def _lead_in(lead: pd.Series, events: pd.DataFrame, spec_columns: list[str]) -> LeadIn:
    attributes = {}
    for c in spec_columns:
        value = lead[c]
        attributes[c] = None if value is None or (isinstance(value, float) and np.isnan(value)) else value
    return LeadIn.model_validate(
        {
            "lead_id": lead["lead_id"],
            "created_at": lead["created_at"],
            "attributes": attributes,
            "interactions": [{"type": t, "occurred_at": o} for t, o in zip(events["type"], events["occurred_at"], strict=True)],
        }
    )


@pytest.mark.parametrize("with_reasons", [False, True])
def test_score_table_equals_score_lead(training_result, simulated_dataset, with_reasons: bool) -> None:
    model, data = training_result.model, simulated_dataset
    as_of = data.data_end - pd.Timedelta(days=100)
    leads = data.leads[data.leads["created_at"] <= as_of].sample(120, random_state=1)
    table = score_table(model, leads, data.interactions, as_of.to_pydatetime(), with_reasons=with_reasons)
    assert list(table.columns) == list(TABLE_COLUMNS)
    assert table["lead_id"].tolist() == leads["lead_id"].tolist()
    by_lead = dict(tuple(data.interactions.groupby("lead_id")))
    columns = ProjectConfig().features.attribute_columns()
    empty = data.interactions.iloc[:0]
    for row, (_, lead) in zip(table.itertuples(index=False), leads.iterrows(), strict=True):
        one = score_lead(model, _lead_in(lead, by_lead.get(lead["lead_id"], empty), columns), as_of.to_pydatetime(),
                         with_reasons=with_reasons, top_k=1)
        assert row.probability == one.probability
        assert (row.score, row.tier, bool(row.mql)) == (one.score, one.tier, one.mql)
        assert row.grid_points == one.point_grid.points
        expected_reason = one.reasons["up"][0].label if with_reasons and one.reasons["up"] else None
        assert row.top_reason == expected_reason


def test_score_table_gives_the_first_reasons_up_of_score_lead(training_result, simulated_dataset) -> None:
    model, data = training_result.model, simulated_dataset
    as_of = data.data_end - pd.Timedelta(days=100)
    leads = data.leads[data.leads["created_at"] <= as_of].sample(80, random_state=2)
    table = score_table(model, leads, data.interactions, as_of.to_pydatetime(), with_reasons=True, top_reasons=3)
    at = TABLE_COLUMNS.index("top_reason") + 1
    assert list(table.columns) == [*TABLE_COLUMNS[:at], "reason_2", "reason_3", *TABLE_COLUMNS[at:]]
    by_lead = dict(tuple(data.interactions.groupby("lead_id")))
    columns = ProjectConfig().features.attribute_columns()
    empty = data.interactions.iloc[:0]
    for row, (_, lead) in zip(table.itertuples(index=False), leads.iterrows(), strict=True):
        one = score_lead(model, _lead_in(lead, by_lead.get(lead["lead_id"], empty), columns), as_of.to_pydatetime(), top_k=3)
        up = [r.label for r in one.reasons["up"]]
        assert [row.top_reason, row.reason_2, row.reason_3] == up + [None] * (3 - len(up))
    assert table["reason_3"].notna().sum() > 20
    without = score_table(model, leads, data.interactions, as_of.to_pydatetime(), top_reasons=2)
    assert without["reason_2"].isna().all() and "reason_3" not in without
    with pytest.raises(ValueError, match="top_reasons: at least 1"):
        score_table(model, leads, data.interactions, as_of.to_pydatetime(), top_reasons=0)


def test_score_table_leaves_out_leads_created_after_as_of(training_result, simulated_dataset) -> None:
    data = simulated_dataset
    as_of = data.leads["created_at"].median()
    table = score_table(training_result.model, data.leads, data.interactions, as_of.to_pydatetime())
    assert len(table) == int((data.leads["created_at"] <= as_of).sum())
    assert table["tier"].isin(["hot", "warm", "cold"]).all()


def test_cli_scores_a_data_folder(trained_bundle: Path, simulated_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "scores.csv"
    result = CliRunner().invoke(
        app,
        ["score", "-i", str(simulated_dir), "-o", str(out), "--bundle", str(trained_bundle),
         "--as-of", "2025-01-01T00:00:00+00:00", "--no-reasons"],
    )
    assert result.exit_code == 0, result.output
    scored = pd.read_csv(out)
    assert list(scored.columns) == list(TABLE_COLUMNS)
    assert scored["probability"].between(0, 1).all()
    assert "scored" in result.output


def test_cli_top_reasons_add_their_columns(trained_bundle: Path, simulated_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "scores.parquet"
    args = ["score", "-i", str(simulated_dir), "-o", str(out), "--bundle", str(trained_bundle), "--as-of", "2025-01-01T00:00:00+00:00"]
    result = CliRunner().invoke(app, [*args, "--top-reasons", "3"])
    assert result.exit_code == 0, result.output
    scored = pd.read_parquet(out)
    at = TABLE_COLUMNS.index("top_reason") + 1
    assert list(scored.columns) == [*TABLE_COLUMNS[:at], "reason_2", "reason_3", *TABLE_COLUMNS[at:]]
    assert scored["reason_3"].notna().any()
    # Each lead's reasons are distinct, strongest first: a later one is there only after the earlier ones.
    assert not (scored["reason_2"].notna() & scored["top_reason"].isna()).any()
    assert not (scored["reason_2"].notna() & (scored["reason_2"] == scored["top_reason"])).any()
    refused = CliRunner().invoke(app, [*args, "--top-reasons", "0"])
    assert refused.exit_code == 2 and "top-reasons" in refused.output


def test_cli_compiled_forest_scores_the_same(trained_bundle: Path, simulated_dir: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("lleaves")
    monkeypatch.setenv("LEADSCORE_COMPILED_DIR", str(tmp_path / "compiled"))
    tables = {}
    for mode in ("never", "always"):
        out = tmp_path / f"scores-{mode}.csv"
        result = CliRunner().invoke(
            app,
            ["score", "-i", str(simulated_dir), "-o", str(out), "--bundle", str(trained_bundle),
             "--as-of", "2025-01-01T00:00:00+00:00", "--no-reasons", "--compiled", mode],
        )
        assert result.exit_code == 0, result.output
        tables[mode] = out.read_bytes()
    assert list((tmp_path / "compiled").glob("*.o"))  # compiled and cached
    assert tables["always"] == tables["never"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scheduler", "tcp://127.0.0.1:1"], "--scheduler is for --engine dask"),
        (["--out", "scores.jsonl"], "scored to .csv or .parquet"),
    ],
)
def test_cli_score_folder_refuses_bad_options(
    trained_bundle: Path, simulated_dir: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    base = {"--out": str(tmp_path / "scores.csv")}
    options = dict(zip(args[::2], args[1::2], strict=True))
    merged = {**base, **options}
    argv = ["score", "-i", str(simulated_dir), "--bundle", str(trained_bundle)]
    for key, value in merged.items():
        argv += [key, value]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2
    assert message in result.output


def test_cli_refuses_dask_for_json_lines(trained_bundle: Path, tmp_path: Path) -> None:
    lines = tmp_path / "in.jsonl"
    lines.write_text(json.dumps({"lead_id": "a", "created_at": "2024-01-01T00:00:00Z"}) + "\n")
    result = CliRunner().invoke(
        app, ["score", "-i", str(lines), "-o", str(tmp_path / "o.csv"), "--bundle", str(trained_bundle), "--engine", "dask"]
    )
    assert result.exit_code == 2
    assert "scores a data folder" in result.output


@pytest.mark.parametrize("reasons", [False, True])
def test_json_lines_are_scored_in_chunks_as_score_lead_scores_each_and_bad_lines_are_named(
    training_result, simulated_dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reasons: bool
) -> None:
    import training.workflow as workflow

    model, data = training_result.model, simulated_dataset
    as_of = (data.data_end - pd.Timedelta(days=100)).to_pydatetime()
    leads = data.leads[data.leads["created_at"] <= as_of].sample(7, random_state=3)
    by_lead = dict(tuple(data.interactions.groupby("lead_id")))
    columns = ProjectConfig().features.attribute_columns()
    good = [_lead_in(lead, by_lead.get(lead["lead_id"], data.interactions.iloc[:0]), columns) for _, lead in leads.iterrows()]
    late = good[0].model_copy(update={"lead_id": "late", "created_at": as_of + pd.Timedelta(days=1)})
    text = [g.model_dump_json() for g in good[:3]] + ["{not json", "", late.model_dump_json()] + [g.model_dump_json() for g in good[3:]]
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(text) + "\n")
    monkeypatch.setattr(workflow, "LINES_PER_CHUNK", 3)  # the bad lines fall in the second chunk of three

    class Quiet:
        def say(self, message: str) -> None: ...
        def warn(self, message: str) -> None: ...

    errors = workflow.score_lines(source, tmp_path / "out.jsonl", model, as_of, reasons=reasons, language="en", console=Quiet())

    assert [e["line"] for e in errors] == [4, 6]
    assert "is after as_of" in " ".join(errors[1]["error"])
    scored = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [s["lead_id"] for s in scored] == [g.lead_id for g in good]
    for s, lead in zip(scored, good, strict=True):
        one = score_lead(model, lead, as_of, with_reasons=reasons).model_dump(mode="json")
        assert s == one


def test_a_large_batch_encodes_as_its_rows_one_by_one(training_result, simulated_dataset) -> None:
    # More rows than one block of `encode_matrix`, and a last block that is not full.
    from features.engine import snapshot_features
    from model.bundle import _ENCODE_BLOCK_ROWS, encode_matrix

    model = training_result.model
    leads = simulated_dataset.leads
    n = 2 * _ENCODE_BLOCK_ROWS + 17
    snapshots = pd.DataFrame({"lead_id": np.resize(leads["lead_id"].to_numpy(), n), "as_of": simulated_dataset.data_end})
    rows = snapshot_features(leads, simulated_dataset.interactions, snapshots, model.spec)
    matrix = encode_matrix(rows, model.feature_names, model.meta.categorical_levels)
    one_by_one = np.vstack([
        encode_matrix(type(rows)({k: v[i : i + 1] for k, v in rows.categorical.items()}, {k: v[i : i + 1] for k, v in rows.numeric.items()}),
                      model.feature_names, model.meta.categorical_levels)
        for i in range(n)
    ])  # fmt: skip
    np.testing.assert_array_equal(matrix, one_by_one)
