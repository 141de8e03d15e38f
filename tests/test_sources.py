"""Bring your own export: config validation, mapping, CSV options, chunking, SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from features.contract import Dataset, StaticDataset
from sources.loader import DataConfig, load_project_data
from training.config import ConfigError, ProjectConfig, load_config

# -- a small CRM export with time: leads, two event tables, an accounts table ----------------

LEADS = pd.DataFrame(
    {
        "Lead ID": ["A1", "A2", "A3", "A4", "A5", "A6"],
        "Created": ["2024-01-02 09:00", "2024-01-03 10:30", "2024-01-05 08:00", "2024-01-07 12:00", "2024-01-09 15:00", "2024-01-10 11:00"],
        "Won On": ["2024-02-01", "", "2024-01-20", "", "not a date", ""],
        "Industry": ["Software", "Retail", "Select", "Software", "Retail", "Healthcare"],
        "Employees": ["1.200,5", "35", "", "12", "7", "x"],
        "Account": ["acc-1", "acc-2", "acc-1", "acc-9", "acc-2", None],
    }
)
EMAILS = pd.DataFrame(
    {
        "contact": ["A1", "A1", "A2", "A3", "A6"],
        "sent_at": ["2024-01-03T10:00:00Z", "2024-01-04T10:00:00Z", "2024-01-04T11:00:00Z", "2024-01-06T10:00:00Z", "2024-01-11T10:00:00Z"],
        "event": ["Opened", "Clicked", "Opened", "Bounced", "Opened"],
    }
)
VISITS = pd.DataFrame({"lead": ["A1", "A4", "A4"], "ts": ["2024-01-02 10:00", "2024-01-08 09:00", "2024-01-08 09:30"]})
ACCOUNTS = pd.DataFrame({"id": ["acc-1", "acc-2"], "Tier": ["gold", "silver"], "Revenue": ["10,5", "3"]})


def _timed_config(folder: Path, chunk_rows: int = 100_000) -> dict:
    csv = {"separator": ";", "decimal": ",", "thousands": ".", "encoding": "utf-8"}
    return {
        # Taken after the last conversion (A1 on 2024-02-01): nothing in the export is later.
        "exported_at": "2024-03-01T00:00:00Z",
        "leads": {
            "source": {"path": str(folder / "leads.csv"), "csv": csv, "chunk_rows": chunk_rows},
            "id": "Lead ID",
            "created_at": {"column": "Created", "timezone": "Europe/Paris"},
            "outcome": {"column": "Won On", "kind": "date", "timezone": "Europe/Paris"},
        },
        "columns": {
            "categorical": ["Industry", "account Tier"],
            "numeric": ["Employees", "account Revenue"],
            "missing_values": ["Select"],
        },
        "interactions": [
            {
                "source": {"path": str(folder / "emails.csv"), "chunk_rows": chunk_rows},
                "lead_id": "contact",
                "occurred_at": "sent_at",
                "type": "event",
                "type_map": {"Opened": "email_open", "Clicked": "email_click", "Bounced": "email_bounce"},
            },
            {
                "source": {"path": str(folder / "visits.parquet"), "chunk_rows": chunk_rows},
                "lead_id": "lead",
                "occurred_at": {"column": "ts", "format": "%Y-%m-%d %H:%M"},
                "type_constant": "page_view",
            },
        ],
        "attributes": [
            {
                "source": {"path": str(folder / "accounts.csv"), "csv": csv, "chunk_rows": chunk_rows},
                "key": "Account",
                "on": "id",
                "columns": ["Tier", "Revenue"],
                "prefix": "account ",
            }
        ],
    }


@pytest.fixture()
def crm_folder(tmp_path: Path) -> Path:
    # Semicolons, decimal commas and Windows line endings, as a French Excel export writes them.
    LEADS.to_csv(tmp_path / "leads.csv", sep=";", index=False, lineterminator="\r\n")
    EMAILS.to_csv(tmp_path / "emails.csv", index=False, lineterminator="\r\n")
    VISITS.to_parquet(tmp_path / "visits.parquet", index=False)
    ACCOUNTS.to_csv(tmp_path / "accounts.csv", sep=";", index=False, lineterminator="\r\n")
    return tmp_path


def _load(raw: dict) -> tuple[ProjectConfig, object]:
    config = ProjectConfig.model_validate({"data": raw})
    assert config.data is not None
    return config, load_project_data(config.data, config.features)


def test_timed_export_maps_onto_the_contract(crm_folder: Path) -> None:
    config, project = _load(_timed_config(crm_folder))
    data = project.dataset
    assert isinstance(data, Dataset)
    leads = data.leads.set_index("lead_id")
    # "not a date" is no outcome: the lead is quarantined, not silently unconverted.
    assert "A5" not in leads.index
    assert any("unparsable outcome date (Won On)" in line for line in data.report.lines())
    # Naive times are read in Europe/Paris and stored in UTC.
    assert leads.loc["A1", "created_at"] == pd.Timestamp("2024-01-02 08:00", tz="UTC")
    assert leads.loc["A1", "converted_at"] == pd.Timestamp("2024-01-31 23:00", tz="UTC")
    assert pd.isna(leads.loc["A2", "converted_at"])
    # Decimal comma, "Select" as missing, a bad number kept as missing and counted.
    assert leads.loc["A1", "employees"] == pytest.approx(1200.5)
    assert leads.loc["A3", "industry"] is None
    assert np.isnan(leads.loc["A6", "employees"])
    assert any("non-numeric or infinite employees" in line for line in data.report.lines())
    # The account join: by key, prefixed names, unmatched keys counted.
    assert leads.loc["A3", "account_tier"] == "gold"
    assert leads.loc["A2", "account_revenue"] == pytest.approx(3.0)
    assert leads.loc["A4", "account_tier"] is None
    assert any("Account not found in data.attributes.0" in line for line in data.report.lines())
    # Two event tables unioned: a mapped type column and a constant type.
    events = data.interactions
    assert sorted(events["type"].astype(str)) == sorted(
        ["email_open", "email_click", "email_open", "email_bounce", "email_open", "page_view", "page_view", "page_view"]
    )
    assert config.features.categorical == ["industry", "account_tier"]
    assert config.features.interactions


@pytest.mark.parametrize(
    ("values", "kind", "expected"),
    [
        (["yes", "No", "YES", "no"], {}, [1, 0, 1, 0]),
        (["1", "0", "1.0", "0"], {}, [1, 0, 1, 0]),
        (["True", "false", "t", "f"], {}, [1, 0, 1, 0]),
        (["Won", "Lost", "won", "Lost"], {"positive": ["won"], "negative": ["lost"]}, [1, 0, 1, 0]),
        (["2024-03-01", "", "01/02/2024", None], {"kind": "date"}, [1, 0, 1, 0]),
    ],
)
def test_outcome_formats(tmp_path: Path, values: list, kind: dict, expected: list[int]) -> None:
    frame = pd.DataFrame({"id": ["a", "b", "c", "d"], "outcome": values, "plan": ["x", "y", "x", "y"]})
    frame.to_csv(tmp_path / "export.csv", index=False)
    _, project = _load(
        {
            "leads": {"source": str(tmp_path / "export.csv"), "id": "id", "outcome": {"column": "outcome", **kind}},
            "columns": {"categorical": ["plan"]},
        }
    )
    assert isinstance(project.dataset, StaticDataset)
    assert project.dataset.leads["converted"].tolist() == expected


def test_unrecognised_outcome_is_quarantined_with_its_value(tmp_path: Path) -> None:
    pd.DataFrame({"id": ["a", "b", "c"], "won": ["yes", "maybe", "no"]}).to_csv(tmp_path / "e.csv", index=False)
    _, project = _load({"leads": {"source": str(tmp_path / "e.csv"), "id": "id", "outcome": "won"} | {"outcome": {"column": "won"}}})
    data = project.dataset
    assert data.leads["lead_id"].tolist() == ["a", "c"]
    assert data.quarantine["__outcome__"].tolist() == ["maybe"]
    assert "none of positive" in data.report.lines()[0]


def test_chunked_reading_equals_one_shot(crm_folder: Path) -> None:
    _, whole = _load(_timed_config(crm_folder, chunk_rows=100_000))
    _, chunked = _load(_timed_config(crm_folder, chunk_rows=2))
    pd.testing.assert_frame_equal(chunked.dataset.leads, whole.dataset.leads)
    pd.testing.assert_frame_equal(
        chunked.dataset.interactions.astype({"type": str}), whole.dataset.interactions.astype({"type": str})
    )


def test_static_semicolon_decimal_comma_crlf_and_cr(tmp_path: Path) -> None:
    text = "Id;Converted;Minutes;Source\r\nL1;Yes;12,5;Google\r\nL2;No;0,25;Direct\r\n"
    (tmp_path / "crlf.csv").write_bytes(text.encode("utf-8-sig"))  # with a byte-order mark, as Excel writes
    (tmp_path / "cr.csv").write_bytes(text.replace("\r\n", "\r").encode("latin-1"))
    for name, csv in (("crlf.csv", {"separator": ";", "decimal": ","}), ("cr.csv", {"separator": ";", "decimal": ",", "line_endings": "cr", "encoding": "latin-1"})):
        _, project = _load(
            {
                "leads": {"source": {"path": str(tmp_path / name), "csv": csv}, "id": "Id", "outcome": {"column": "Converted"}},
                "columns": {"numeric": ["Minutes"], "categorical": ["Source"]},
            }
        )
        leads = project.dataset.leads
        assert leads["lead_id"].tolist() == ["L1", "L2"], name
        assert leads["minutes"].tolist() == [12.5, 0.25], name
        assert leads["source"].tolist() == ["Google", "Direct"], name


@pytest.mark.parametrize(
    ("data", "key", "expected"),
    [
        ({"leads": {"source": "x.csv", "id": "id"}}, "data.leads.outcome", "Field required"),
        ({"leads": {"source": "x.xlsx", "id": "id", "outcome": {"column": "c"}}}, "data.leads.source", "set format: csv or parquet"),
        ({"leads": {"source": {"path": "x.csv", "csv": {"separator": ";", "decimal": ";"}}, "id": "i", "outcome": {"column": "c"}}}, "data.leads.source.csv", "decimal and separator"),
        ({"leads": {"source": {"path": "x.csv", "csv": {"encoding": "klingon"}}, "id": "i", "outcome": {"column": "c"}}}, "data.leads.source.csv.encoding", "unknown encoding"),
        ({"leads": {"source": {"url": "sqlite:///x.db"}, "id": "i", "outcome": {"column": "c"}}}, "data.leads.source", "exactly one of table or query"),
        ({"leads": {"source": "x.csv", "id": "i", "outcome": {"column": "c", "kind": "bool"}}}, "data.leads.outcome.kind", "'flag' or 'date'"),
        ({"leads": {"source": "x.csv", "id": "i", "created_at": {"column": "t", "timezone": "Mars/Olympus"}, "outcome": {"column": "c", "kind": "date"}}}, "data.leads.created_at.timezone", "unknown time zone"),
        ({"leads": {"source": "x.csv", "id": "i", "created_at": "t", "outcome": {"column": "c"}}}, "data", "leads.outcome.date"),
        ({"leads": {"source": "x.csv", "id": "i", "outcome": {"column": "c"}}, "columns": {"post_outcome": ["Tags"]}}, "data", "columns.post_outcome: ['Tags'] not declared"),
        ({"leads": {"source": "x.csv", "id": "i", "outcome": {"column": "c"}}, "columns": {"categorical": ["A b", "a_b"]}}, "data", "both become feature 'a_b'"),
        ({"leads": {"source": "x.csv", "id": "i", "outcome": {"column": "c"}}, "columns": {"categorical": ["c"]}}, "data", "leads.outcome.column"),
        ({"leads": {"source": "x.csv", "id": "i", "outcome": {"column": "c"}}, "interactions": [{"source": "e.csv", "lead_id": "i", "occurred_at": "t", "type": "k"}]}, "data", "interactions: event tables need leads.created_at"),
        ({"leads": {"source": "x.csv", "id": "i", "outcome": {"column": "c"}}, "columns": {"categorical": ["z"]}, "attributes": [{"source": "a.csv", "key": "k", "columns": ["q"]}]}, "data", "attributes.0.columns: ['q'] not declared"),
        ({"leads": {"source": "x.csv", "id": "i", "outcome": {"column": "c"}, "colour": "red"}}, "data.leads.colour", "Extra inputs are not permitted"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, data: dict, key: str, expected: str) -> None:
    path = tmp_path / "leadscore.yaml"
    path.write_text(yaml.safe_dump({"data": data}))
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert f"  {key}: " in message, message
    assert expected in message, message


def test_missing_source_column_names_the_key_and_suggests(tmp_path: Path) -> None:
    pd.DataFrame({"id": ["a"], "Converted": ["1"]}).to_csv(tmp_path / "e.csv", index=False)
    config = ProjectConfig.model_validate(
        {"data": {"leads": {"source": str(tmp_path / "e.csv"), "id": "id", "outcome": {"column": "Convertd"}}}}
    )
    from sources.loader import SourceError

    with pytest.raises(SourceError, match=r"data.leads.outcome.column: no column 'Convertd' .*did you mean 'Converted'"):
        load_project_data(config.data, config.features)  # type: ignore[arg-type]


def test_features_section_cannot_redeclare_attributes() -> None:
    with pytest.raises(ValueError, match="features.categorical: leave it out when data: is given"):
        ProjectConfig.model_validate(
            {
                "features": {"categorical": ["x"]},
                "data": {"leads": {"source": "x.csv", "id": "i", "outcome": {"column": "c"}}, "columns": {"categorical": ["y"]}},
            }
        )


def test_attribute_table_with_a_repeated_key_is_refused(crm_folder: Path) -> None:
    pd.concat([ACCOUNTS, ACCOUNTS.head(1)]).to_csv(crm_folder / "accounts.csv", sep=";", index=False)
    config = ProjectConfig.model_validate({"data": _timed_config(crm_folder)})
    from sources.loader import SourceError

    with pytest.raises(SourceError, match=r"data.attributes.0: 1 rows repeat a value of 'id' \(e.g. \['acc-1'\]\)"):
        load_project_data(config.data, config.features)  # type: ignore[arg-type]


# -- SQL sources ----------------------------------------------------------------------------


def _write_tables(url: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    leads = LEADS.assign(Employees=LEADS["Employees"].str.replace(".", "", regex=False).str.replace(",", ".", regex=False))
    with engine.begin() as connection:
        leads.to_sql("crm_leads", connection, index=False, if_exists="replace")
        EMAILS.to_sql("email events", connection, index=False, if_exists="replace")
        VISITS.to_sql("visits", connection, index=False, if_exists="replace")
        ACCOUNTS.assign(Revenue=["10.5", "3"]).to_sql("accounts", connection, index=False, if_exists="replace")
    engine.dispose()


def _sql_config(url: str, folder: Path, chunk_rows: int) -> dict:
    raw = _timed_config(folder, chunk_rows)
    raw["leads"]["source"] = {"url": url, "table": "crm_leads", "chunk_rows": chunk_rows}
    raw["interactions"][0]["source"] = {"url": url, "table": "email events", "chunk_rows": chunk_rows}
    raw["interactions"][1]["source"] = {
        "url": url, "query": "SELECT lead, ts FROM visits WHERE ts IS NOT NULL", "chunk_rows": chunk_rows,
    }
    raw["attributes"][0]["source"] = {"url": url, "table": "accounts", "chunk_rows": chunk_rows}
    return raw


def _assert_same_as_csv(url: str, folder: Path) -> None:
    _, from_csv = _load(_timed_config(folder))
    _, from_sql = _load(_sql_config(url, folder, chunk_rows=2))
    pd.testing.assert_frame_equal(from_sql.dataset.leads, from_csv.dataset.leads)
    pd.testing.assert_frame_equal(
        from_sql.dataset.interactions.astype({"type": str}), from_csv.dataset.interactions.astype({"type": str})
    )


def test_sqlite_source_equals_the_csv_export(crm_folder: Path) -> None:
    url = f"sqlite:///{crm_folder / 'crm.db'}"
    _write_tables(url)
    _assert_same_as_csv(url, crm_folder)


def test_sql_url_reads_passwords_from_the_environment(crm_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADSCORE_TEST_DB", str(crm_folder / "crm.db"))
    _write_tables(f"sqlite:///{crm_folder / 'crm.db'}")
    _assert_same_as_csv("sqlite:///${LEADSCORE_TEST_DB}", crm_folder)
    monkeypatch.delenv("LEADSCORE_TEST_DB")
    from sources.loader import SourceError

    with pytest.raises(SourceError, match=r"url: environment variable\(s\) \['LEADSCORE_TEST_DB'\] are not set"):
        _load(_sql_config("sqlite:///${LEADSCORE_TEST_DB}", crm_folder, 10))


def test_postgresql_source_equals_the_csv_export(postgres_url: str, crm_folder: Path) -> None:
    _write_tables(postgres_url)
    _assert_same_as_csv(postgres_url, crm_folder)


def test_data_config_dump_validates_again(crm_folder: Path) -> None:
    config = ProjectConfig.model_validate({"data": _timed_config(crm_folder)})
    again = ProjectConfig.model_validate(config.model_dump())
    assert again.features == config.features
    assert DataConfig.model_validate(config.data.model_dump()) == config.data  # type: ignore[union-attr]


def test_contract_files_through_data_config_equal_the_folder_flow(simulated_dir: Path, simulated_dataset) -> None:
    columns = ["industry", "company_size", "country", "job_role", "seniority", "source", "marketing_consent"]
    config = ProjectConfig.model_validate(
        {
            "data": {
                # The export time the folder flow reads from meta.json.
                "exported_at": json.loads((simulated_dir / "meta.json").read_text())["export_at"],
                "leads": {
                    "source": {"path": str(simulated_dir / "leads.csv"), "chunk_rows": 700},
                    "id": "lead_id",
                    "created_at": "created_at",
                    "outcome": {"column": "converted_at", "kind": "date"},
                },
                "columns": {"categorical": columns, "numeric": ["employee_count"], "email": "email"},
                "interactions": [
                    {"source": {"path": str(simulated_dir / "interactions.csv"), "chunk_rows": 10_000},
                     "lead_id": "lead_id", "occurred_at": "occurred_at", "type": "type"}
                ],
            }
        }
    )
    # An export with event tables learns its vocabulary (features.learn_types); the rest is the folder flow's spec.
    assert config.features.learn_types is not None
    assert config.features.model_copy(update={"learn_types": None}) == ProjectConfig().features
    project = load_project_data(config.data, config.features)  # type: ignore[arg-type]
    ours, folder = project.dataset, simulated_dataset
    pd.testing.assert_frame_equal(ours.leads[folder.leads.columns], folder.leads, check_dtype=False)
    pd.testing.assert_frame_equal(
        ours.interactions[["lead_id", "occurred_at", "type"]].astype({"type": str, "lead_id": str}),
        folder.interactions[["lead_id", "occurred_at", "type"]].astype({"type": str, "lead_id": str}),
        check_dtype=False,
    )
