"""`leadscore score` on JSON lines: the columnar fast path (`model.lines`) answers every line as the per-line path did.

The reference is `score_lines` as it was before the fast path (`_score_lines_one_by_one` below,
kept verbatim): each line a `LeadIn`, read by `read_lead`, scored by `score_read_leads`, dumped by
`ScoreOut.model_dump_json()`. On a file of varied leads and broken lines, the two give the same
bytes (answers, `.csv` rows, `errors.json`), with and without reasons; and the common lines do go
the fast way. Code tests check the fast path's pieces against what they replace: the time reader
against pydantic's, the columnar attribute reader against `normalise_attributes`, the fast reads
against `read_lead`.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import model.lines as lines_module
import training.workflow as workflow
from features.schema import AttributeColumn, LeadSchema
from model.bundle import ScoringModel
from model.compiled import CompileMode
from model.lines import _LEAD_LINE, _arrow_parts, _LineColumns, _read_common, epoch_seconds, zoned_times_us
from model.scoring import InteractionIn, LeadIn, LeadRead, read_lead, score_read_leads
from training.workflow import _flat_score, score_lines


class _Quiet:
    def say(self, message: str) -> None: ...

    def warn(self, message: str) -> None: ...


def _score_lines_one_by_one(source: Path, out: Path, model: ScoringModel, as_of: datetime | None, *, reasons: bool, language: str) -> list[dict[str, Any]]:
    # `training.workflow.score_lines` before the fast path, verbatim but for the progress bar and the console.
    results = []
    errors: list[dict[str, Any]] = []
    lines = source.read_text().splitlines()
    for start in range(0, len(lines), workflow.LINES_PER_CHUNK):
        reads: list[LeadRead] = []
        for number, line in enumerate(lines[start : start + workflow.LINES_PER_CHUNK], start=start + 1):
            if not line.strip():
                continue
            try:
                reads.append(read_lead(model, LeadIn.model_validate_json(line), as_of))
            except (ValidationError, ValueError) as error:
                errors.append({"line": number, "error": str(error).splitlines()[0:3]})
        results.extend(out for out, _features in score_read_leads(model, reads, with_reasons=reasons, language=language))
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".csv":
        pd.DataFrame([_flat_score(r.model_dump(mode="json")) for r in results]).to_csv(out, index=False)
    else:
        out.write_text("".join(r.model_dump_json() + "\n" for r in results))
    if errors:
        out.with_suffix(out.suffix + ".errors.json").write_text(json.dumps(errors, indent=2))
    return errors


# The simulated model read by a schema with every rule a line can meet: export names, missing tokens, a
# thousands separator, a type map and a type split by channel.
SCHEMA_RULES = {
    "missing_values": ["Select", "N/A"],
    "type_map": {"Email Opened": "email_open", "Pricing Page": "pricing_page_view"},
    "split_types": ["email_click"],
}
EXPORT_NAMES = {"source": "Lead Source", "employee_count": "Employees"}


def _with_rules(model: ScoringModel) -> ScoringModel:
    schema = model.schema.model_dump()
    for column in schema["attributes"]:
        column["source"] = EXPORT_NAMES.get(column["name"], column["source"])
        if column["name"] == "employee_count":
            column["thousands"] = ","
    schema = LeadSchema.model_validate({**schema, **SCHEMA_RULES})
    return ScoringModel(model.booster, model.meta.model_copy(update={"lead_schema": schema}), model.hazard)


@pytest.fixture(scope="module")
def ruled_model(training_result) -> ScoringModel:
    return _with_rules(training_result.model)


@pytest.fixture(scope="module")
def ruled_model_with_hazard(when_fit) -> ScoringModel:
    return _with_rules(when_fit[0])


@pytest.fixture(scope="module")
def as_of(simulated_dataset) -> datetime:
    return (simulated_dataset.data_end - pd.Timedelta(days=60)).to_pydatetime() + timedelta(microseconds=250_000)


def _plain_leads(data, as_of: datetime, n: int) -> list[dict[str, Any]]:
    # Leads of the simulated set as a CRM sends them (times "...Z", the features' names), the common line.
    leads = data.leads[data.leads["created_at"] <= pd.Timestamp(as_of)].sample(n, random_state=5)
    by_lead = dict(tuple(data.interactions.groupby("lead_id")))
    columns = ["industry", "company_size", "employee_count", "country", "job_role", "seniority", "source", "marketing_consent", "email"]
    out = []
    for _, lead in leads.iterrows():
        events = by_lead.get(lead["lead_id"], data.interactions.iloc[:0])
        attributes = {c: None if isinstance(lead[c], float) and math.isnan(lead[c]) else lead[c] for c in columns}
        out.append(json.loads(LeadIn.model_validate({
            "lead_id": lead["lead_id"], "created_at": lead["created_at"], "attributes": attributes,
            "interactions": [{"type": t, "occurred_at": o} for t, o in zip(events["type"], events["occurred_at"], strict=True)],
        }).model_dump_json()))  # fmt: skip
    return out


REJECTED = "rejected"


def _varied_lines(data, as_of: datetime) -> tuple[list[str], set[int], set[int], set[int]]:
    """A file's lines: (the lines; numbers of the lines that must go the fast way; that must not; that are rejected)."""
    base = _plain_leads(data, as_of, 60)
    lines: list[str] = []
    fast: set[int] = set()
    slow: set[int] = set()
    rejected: set[int] = set()

    def add(lead: dict[str, Any] | str, common: bool | str | None) -> None:
        lines.append(lead if isinstance(lead, str) else json.dumps(lead))
        if common is True:
            fast.add(len(lines))
        elif common is False or common == REJECTED:
            slow.add(len(lines))
        if common == REJECTED:
            rejected.add(len(lines))

    def variant(k: int, **changes: Any) -> dict[str, Any]:
        lead = json.loads(json.dumps(base[k]))
        lead.update(changes)
        lead["lead_id"] = f"{lead['lead_id']}-v{len(lines)}"
        return lead

    def shifted(text: str, minutes: int, decimals: str = "") -> str:
        when = datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone(timedelta(minutes=minutes)))
        return when.strftime("%Y-%m-%dT%H:%M:%S") + decimals + when.strftime("%z")[:3] + ":" + when.strftime("%z")[3:]

    for k in range(40):  # common leads, as sent by the benchmark's CRM
        add(base[k], True)
    add("", None)
    add("   \t", None)
    lead = variant(40)
    lead["created_at"] = shifted(lead["created_at"], 120)
    lead["interactions"] = [{**e, "occurred_at": shifted(e["occurred_at"], -330, ".5")} for e in lead["interactions"]]
    add(lead, True)  # other zones and decimals: still common
    lead = variant(41)
    for e in lead["interactions"][::2]:
        e["occurred_at"] = e["occurred_at"].replace("Z", ".123456Z")
    add(lead, True)
    lead = variant(42)
    lead["created_at"] = lead["created_at"].rstrip("Z")
    add(lead, False)  # a naive creation time
    lead = variant(43)
    if lead["interactions"]:
        lead["interactions"][0]["occurred_at"] = lead["interactions"][0]["occurred_at"].rstrip("Z")
    add(lead, False if lead["interactions"] else None)  # a naive interaction time
    lead = variant(44)
    lead["interactions"].append({"type": "page_view", "occurred_at": lead["created_at"], "properties": {"pages": 3}})
    add(lead, False)  # event properties
    add(variant(45, interactions=[{"type": "email_click", "occurred_at": base[45]["created_at"], "channel": "newsletter"},
                                  {"type": "email_click", "occurred_at": base[45]["created_at"], "channel": " Select "},
                                  {"type": "Email Opened", "occurred_at": base[45]["created_at"], "channel": "web"},
                                  {"type": "Pricing Page", "occurred_at": base[45]["created_at"]},
                                  {"type": "podcast_listen", "occurred_at": base[45]["created_at"]},
                                  {"type": "   ", "occurred_at": base[45]["created_at"]},
                                  {"type": "zzz_unknown", "occurred_at": base[45]["created_at"]}]), True)  # fmt: skip
    created = datetime.fromisoformat(base[46]["created_at"].replace("Z", "+00:00"))
    early = (created - timedelta(days=3)).isoformat().replace("+00:00", "Z")
    late = (as_of + timedelta(days=2)).isoformat()
    add(variant(46, interactions=[*base[46]["interactions"], {"type": "page_view", "occurred_at": early},
                                  {"type": "demo_request", "occurred_at": late}]), True)  # fmt: skip
    add(variant(47, attributes={**base[47]["attributes"], "industry": "quantum basket weaving " * 6, "country": "Atlantis"}), True)
    attributes = {("Lead Source" if key == "source" else "Employees" if key == "employee_count" else key): value
                  for key, value in base[48]["attributes"].items()}  # fmt: skip
    attributes["Employees"] = "1,250"
    add(variant(48, attributes=attributes), True)  # named as the export's columns, a number as text
    add(variant(49, attributes={**base[49]["attributes"], "job_role": "select", "seniority": " N/A ", "industry": ""}), True)
    add(variant(50, attributes={**base[50]["attributes"], "favourite_colour": "blue", "utm": 3}), True)
    add(variant(51, attributes={"industry": "software", "employee_count": 12}), True)  # most attributes missing
    add(variant(52, attributes={**base[52]["attributes"], "employee_count": -0.0, "country": 0.0, "marketing_consent": True}), True)
    add(variant(53, interactions=[]), True)
    lead = variant(54)
    del lead["interactions"], lead["attributes"]
    add(lead, True)
    lead = variant(17)
    lead["attributes"] = dict(reversed(list(lead["attributes"].items())))
    add(lead, True)  # the attributes in another order
    lead = variant(18, interactions=[{"type": "\u00e9" * 100, "occurred_at": base[18]["created_at"]}])
    lead["lead_id"] = "\u00e9" * 200
    add(lead, True)  # the longest, in characters
    add(variant(19, attributes={**base[19]["attributes"], "industry": None}), True)  # an attribute sent as null
    add(variant(20, attributes=None), REJECTED)
    add(variant(21, interactions=None), REJECTED)
    add(variant(22, interactions=[None]), REJECTED)
    add(variant(23, interactions=[{"type": None, "occurred_at": base[23]["created_at"]}]), REJECTED)
    add(json.dumps(variant(24, attributes={**base[24]["attributes"], "employee_count": float("nan")})), REJECTED)  # NaN: pydantic reads it
    add("{not json", REJECTED)
    add(json.dumps({k: v for k, v in base[55].items() if k != "lead_id"}), REJECTED)  # no lead_id
    add(variant(56, campaign="spring"), REJECTED)  # an extra top-level field
    add(variant(57, created_at="2024-02-30T10:00:00Z"), REJECTED)  # no such day
    add(variant(58, created_at="1717232400"), REJECTED)  # a number written as text
    lead = variant(59)
    lead["attributes"]["employee_count"] = float("inf")
    add(json.dumps(lead), REJECTED)  # Infinity: not JSON, but pydantic reads it
    lead = variant(0)
    lead["attributes"]["employee_count"] = 1e400
    add(json.dumps(lead).replace("Infinity", "1e400"), REJECTED)
    add(variant(1, interactions=[{"type": "x" * 101, "occurred_at": base[1]["created_at"]}]), REJECTED)  # too long a type
    add(variant(2, created_at=(as_of + timedelta(days=1)).isoformat()), REJECTED)  # created after as_of
    add(variant(3, attributes={**base[3]["attributes"], "Lead Source": "web"}), REJECTED)  # source given twice
    add(variant(4, attributes={**base[4]["attributes"], "employee_count": "many"}), REJECTED)  # no number
    add(variant(5, attributes={**base[5]["attributes"], "employee_count": False}), REJECTED)  # a boolean count
    add(variant(6, interactions=[{"type": "page_view", "occurred_at": 1717232400}]), REJECTED)  # a number for a time
    add(variant(7, interactions=[{"type": "page_view", "occurred_at": "2024-06-01T10:00:00Z", "source": "ads"}]), False)  # extra event field
    add(variant(8, interactions=[{"type": "page_view", "occurred_at": "2024-06-01T10:00:00+24:00"}]), REJECTED)
    add(variant(9, interactions=[{"type": "page_view", "occurred_at": "2024-06-01 10:00:00Z"}]), False)  # a space, not T
    add(variant(10, created_at="0001-01-01T00:00:00+14:00"), REJECTED)
    add('{"lead_id": "dup", "lead_id": "dup-2", "created_at": "2024-01-05T00:00:00Z"}', True)  # a key twice
    add(variant(11, lead_id="L-\u00e9\u4e2d\n\u2028\"\\\u0001"), True)  # text to escape
    add(variant(12, attributes=[1, 2]), REJECTED)
    add(variant(13, attributes={**base[13]["attributes"], "industry": {"nested": 1}}), REJECTED)
    add(json.dumps(base[14]) + " trailing", REJECTED)
    add("[]", REJECTED)
    add(json.dumps({**base[15], "lead_id": ""}), REJECTED)
    add(json.dumps({**base[16], "lead_id": "x" * 201}), REJECTED)
    return lines, fast, slow, rejected


@pytest.fixture(scope="module")
def varied_file(simulated_dataset, as_of: datetime, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, set[int], set[int], set[int]]:
    lines, fast, slow, rejected = _varied_lines(simulated_dataset, as_of)
    path = tmp_path_factory.mktemp("lines") / "leads.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path, fast, slow, rejected


def _files(out: Path) -> tuple[bytes, bytes | None]:
    errors = out.with_suffix(out.suffix + ".errors.json")
    return out.read_bytes(), errors.read_bytes() if errors.exists() else None


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
@pytest.mark.parametrize("reasons", [False, True])
@pytest.mark.parametrize(("chunk", "arrow_min"), [(7, lines_module.ARROW_MIN_LINES), (2_000, lines_module.ARROW_MIN_LINES), (2_000, 1)])
def test_the_fast_path_writes_what_the_per_line_path_wrote(
    ruled_model: ScoringModel, varied_file, as_of: datetime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    suffix: str, reasons: bool, chunk: int, arrow_min: int,
) -> None:  # fmt: skip
    source, fast, slow, rejected = varied_file
    monkeypatch.setattr(workflow, "LINES_PER_CHUNK", chunk)
    monkeypatch.setattr(lines_module, "ARROW_MIN_LINES", arrow_min)
    alone: list[int] = []
    read_alone = lines_module._read_alone
    monkeypatch.setattr(lines_module, "_read_alone", lambda model, lines, when: (alone.extend(n for n, _l in lines), read_alone(model, lines, when))[1])
    by_arrow: list[int] = []
    arrow_parts = lines_module._arrow_parts
    monkeypatch.setattr(lines_module, "_arrow_parts", lambda schema, numbered: (
        found := arrow_parts(schema, numbered), by_arrow.extend(n for numbers, _columns in found[0] for n in numbers))[0])  # fmt: skip

    expected_errors = _score_lines_one_by_one(source, tmp_path / f"ref{suffix}", ruled_model, as_of, reasons=reasons, language="en")
    errors = score_lines(source, tmp_path / f"new{suffix}", ruled_model, as_of, reasons=reasons, language="en", console=_Quiet())

    assert _files(tmp_path / f"new{suffix}") == _files(tmp_path / f"ref{suffix}")
    assert errors == expected_errors
    assert {e["line"] for e in errors} == rejected  # the broken lines, named
    assert not fast & set(alone)  # the common lines went the fast way
    assert slow <= set(alone)  # and the others alone
    assert set(range(1, 36)) <= set(by_arrow) if chunk == 7 else len(fast & set(by_arrow)) >= 40  # Arrow read most common lines


@pytest.mark.parametrize(("reasons", "language"), [(False, "en"), (True, "fr")])
def test_a_bundle_with_a_hazard_gets_the_same_answers(ruled_model_with_hazard: ScoringModel, varied_file, as_of: datetime, tmp_path: Path,
                                                      reasons: bool, language: str) -> None:  # fmt: skip
    source, _fast, _slow, _rejected = varied_file
    _score_lines_one_by_one(source, tmp_path / "ref.jsonl", ruled_model_with_hazard, as_of, reasons=reasons, language=language)
    score_lines(source, tmp_path / "new.jsonl", ruled_model_with_hazard, as_of, reasons=reasons, language=language, console=_Quiet())

    assert (tmp_path / "new.jsonl").read_bytes() == (tmp_path / "ref.jsonl").read_bytes()
    assert '"probability_by_horizon":{' in (tmp_path / "new.jsonl").read_text()
    assert ('"reasons":{"up":[{' in (tmp_path / "new.jsonl").read_text()) == reasons


def test_the_compiled_forest_gives_the_same_answers(ruled_model: ScoringModel, varied_file, as_of: datetime, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADSCORE_COMPILED_DIR", str(tmp_path / "compiled"))
    model = ScoringModel(ruled_model.booster, ruled_model.meta, ruled_model.hazard)  # its own compiled forest, none yet
    source, _fast, _slow, _rejected = varied_file
    _score_lines_one_by_one(source, tmp_path / "ref.jsonl", model, as_of, reasons=False, language="en")
    score_lines(source, tmp_path / "new.jsonl", model, as_of, reasons=False, language="en", console=_Quiet(), compiled=CompileMode.always)

    assert model.compiled_forest(1, CompileMode.auto) is not None  # the fast lines were predicted by it
    assert (tmp_path / "new.jsonl").read_bytes() == (tmp_path / "ref.jsonl").read_bytes()


def test_a_file_large_enough_compiles_the_forest_once_under_auto(ruled_model: ScoringModel, varied_file, as_of: datetime, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    # The file is the batch: its trend rows, not a chunk's, are weighed against COMPILE_MIN_ROWS, as score_table weighs its own.
    monkeypatch.setenv("LEADSCORE_COMPILED_DIR", str(tmp_path / "compiled"))
    source, _fast, _slow, _rejected = varied_file
    n_lines = len(source.read_text().splitlines())
    for min_rows, compiles in ((2 * n_lines + 1, False), (2 * n_lines, True)):
        monkeypatch.setattr(workflow, "COMPILE_MIN_ROWS", min_rows)
        model = ScoringModel(ruled_model.booster, ruled_model.meta, ruled_model.hazard)  # no compiled forest yet
        score_lines(source, tmp_path / "new.jsonl", model, as_of, reasons=False, language="en", console=_Quiet())

        assert (model._compiled is not None) == compiles


def test_without_as_of_leads_are_scored_now_as_before(ruled_model: ScoringModel, varied_file, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # "Now" frozen for both paths, so that the answers can be compared byte for byte.
    import model.scoring as scoring

    now = datetime(2025, 1, 20, 12, 0, 0, 123_456, tzinfo=UTC)

    class Frozen(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Frozen:  # type: ignore[override]
            return cls.fromtimestamp(now.timestamp(), tz)

    monkeypatch.setattr(scoring, "datetime", Frozen)
    monkeypatch.setattr(lines_module, "datetime", Frozen)
    source, _fast, _slow, _rejected = varied_file

    expected = _score_lines_one_by_one(source, tmp_path / "ref.jsonl", ruled_model, None, reasons=False, language="en")
    errors = score_lines(source, tmp_path / "new.jsonl", ruled_model, None, reasons=False, language="en", console=_Quiet())

    assert _files(tmp_path / "new.jsonl") == _files(tmp_path / "ref.jsonl")
    assert errors == expected


@pytest.mark.parametrize("reader", ["pydantic", "arrow"])
def test_common_lines_are_read_as_read_lead_reads_them(ruled_model: ScoringModel, varied_file, as_of: datetime, reader: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    source, fast, _slow, _rejected = varied_file
    lines = source.read_text().splitlines()
    numbers = sorted(fast)
    if reader == "arrow":  # in parts: a category sent as a number, or a number as text, makes a field of two kinds
        monkeypatch.setattr(lines_module, "ARROW_MIN_LINES", 1)
        parts, _left = _arrow_parts(ruled_model.schema, [(n, lines[n - 1]) for n in numbers])
        assert sum(len(part_numbers) for part_numbers, _columns in parts) >= 40
    else:
        parts = [(numbers, _LineColumns.of_dicts(ruled_model.schema, [_LEAD_LINE.validate_json(lines[n - 1]) for n in numbers]))]

    for part_numbers, columns in parts:
        common = _read_common(ruled_model, columns, as_of)
        reads = common.reads(list(ruled_model.spec.properties))

        assert common.positions == list(range(len(part_numbers)))
        assert reads == [read_lead(ruled_model, LeadIn.model_validate_json(lines[n - 1]), as_of) for n in part_numbers]


# -- the time reader ---------------------------------------------------------------------------

_DIGIT = st.sampled_from("0123456789")


@st.composite
def _time_texts(draw: st.DrawFn) -> str:
    """Times in or near the fast form: valid ones, and ones with a field out of range, a character changed or cut."""
    year = draw(st.integers(1890, 2210))
    fields = [draw(st.integers(0, 13)), draw(st.integers(0, 32)), draw(st.integers(0, 24)), draw(st.integers(0, 60)), draw(st.integers(0, 60))]
    text = f"{year:04d}-{fields[0]:02d}-{fields[1]:02d}T{fields[2]:02d}:{fields[3]:02d}:{fields[4]:02d}"
    if draw(st.booleans()):
        text += "." + "".join(draw(st.lists(_DIGIT, min_size=0, max_size=8)))
    zone = draw(st.sampled_from(["Z", "", "+00:00", "-00:00", "+05:30", "-23:59", "+24:00", "+01:60", "+0100", "z", "+1:00"]))
    text += zone
    mutation = draw(st.sampled_from(["none", "none", "none", "replace", "cut", "append"]))
    if mutation != "none" and text:
        at = draw(st.integers(0, len(text) - 1))
        char = draw(st.sampled_from(["0", "9", " ", "T", "t", "-", ":", ".", "Z", "\x00", "\u0661", "é"]))
        text = {"replace": text[:at] + char + text[at + 1 :], "cut": text[:at], "append": text + char}[mutation]
    return text


def _pydantic_reading(text: str) -> tuple[int, int] | None:
    # (microseconds since 1970, whole seconds) as `LeadIn` and `read_lead` read an interaction time; None: not zoned, or refused.
    try:
        when = InteractionIn.model_validate({"type": "page_view", "occurred_at": text}).occurred_at
    except ValidationError:
        return None
    if when.tzinfo is not UTC:
        return None
    return (when - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1), int(when.timestamp())


@settings(max_examples=3_000, deadline=None)
@given(st.lists(_time_texts(), min_size=1, max_size=20))
def test_a_time_read_in_numpy_is_the_instant_pydantic_reads(texts: list[str]) -> None:
    us, ok = zoned_times_us(texts)
    seconds = epoch_seconds(us)
    arrow_us, arrow_ok = zoned_times_us(pa.array(["padding", *texts], pa.string()).slice(1))  # from its buffers, at an offset
    assert np.array_equal(arrow_us, us) and np.array_equal(arrow_ok, ok)
    for text, read, micro, whole in zip(texts, ok.tolist(), us.tolist(), seconds.tolist(), strict=True):
        if read:  # never a time pydantic refuses, reads without a zone, or reads as another instant
            assert _pydantic_reading(text) == (micro, whole), text


@pytest.mark.parametrize(
    "text",
    ["2024-03-01T10:00:00Z", "2024-02-29T23:59:59.999999-23:59", "1900-01-01T00:00:00.5+01:00", "2200-12-31T23:59:59+00:00",
     "1969-12-31T23:59:59.5Z", "2038-01-19T03:14:08.1-00:00"],
)  # fmt: skip
def test_the_common_forms_are_read_in_numpy(text: str) -> None:
    us, ok = zoned_times_us([text, "2024-03-01T10:00:00"])

    assert ok.tolist() == [True, False]
    assert (int(us[0]), int(epoch_seconds(us)[0])) == _pydantic_reading(text)


# -- the attribute reader ----------------------------------------------------------------------

_COLUMNS_SCHEMA = LeadSchema(
    attributes=[
        AttributeColumn(source="Lead Source", name="source", kind="category"),
        AttributeColumn(source="Employees", name="employee_count", kind="number", thousands=",", decimal="."),
        AttributeColumn(source="email", name="email", kind="email"),
    ],
    missing_values=["Select", "n/a"],
)
_KEYS = st.sampled_from(["Lead Source", "source", "Employees", "employee_count", "email", "other"])
_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5), st.sampled_from([0.0, -0.0, 1.5, -2.0, 1e300, 10**400]),
    st.sampled_from(["", " ", "Select", " N/A ", "web", " web", "1,200", "1.5", "x", "a@b.com", "0", "-0.0"]),
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.dictionaries(_KEYS, _VALUES, max_size=5), max_size=12))
def test_the_attribute_columns_are_normalise_attributes_lead_by_lead(many: list[dict[str, object]]) -> None:
    read = _COLUMNS_SCHEMA.normalise_attribute_columns(many)

    for i, attributes in enumerate(many):
        values, extra, problems = _COLUMNS_SCHEMA.normalise_attributes(attributes)
        assert bool(read.unreadable[i]) == bool(problems)
        if not problems:
            assert repr(read.values(i)) == repr(values)  # repr: -0.0 is not 0.0, and NaN is NaN
            assert read.extra[i] == extra
            assert all(read.columns[c][i] is None for c in read.columns if c not in values)


def test_blank_and_odd_chunks_are_answered_in_line_order(ruled_model: ScoringModel, as_of: datetime) -> None:
    answers, errors = lines_module.score_line_chunk(ruled_model, ["", "{", "  "], 10, as_of, with_reasons=False)

    assert answers == []
    assert [e["line"] for e in errors] == [11]
    assert np.array_equal(zoned_times_us([])[1], np.zeros(0, dtype=bool))


_ARROW_TYPES = {"text": (pa.string(), st.sampled_from(["", " ", "Select", " N/A ", "web", " web", "1,200", "1.5", "x", "a@b.com", "-0.0"])),
                "integer": (pa.int64(), st.integers(-5, 5)), "boolean": (pa.bool_(), st.booleans()),
                "float": (pa.float64(), st.sampled_from([0.0, -0.0, 1.5, -2.0, 1e300, 3.0]))}  # fmt: skip


@st.composite
def _arrow_leads(draw: st.DrawFn) -> tuple[list[str], list[str], list[dict[str, object]]]:
    # Leads whose keys come in one order, each key's values of one type or null, some keys left out: (keys, types, the leads).
    keys = draw(st.lists(_KEYS, unique=True, max_size=4))
    kinds = [draw(st.sampled_from(sorted(_ARROW_TYPES))) for _key in keys]
    n = draw(st.integers(0, 8))
    columns = [draw(st.lists(st.one_of(st.none(), _ARROW_TYPES[kind][1]), min_size=n, max_size=n)) for kind in kinds]
    sent = [draw(st.lists(st.booleans(), min_size=n, max_size=n)) for _key in keys]
    return keys, kinds, [{key: column[i] for key, column, by in zip(keys, columns, sent, strict=True) if by[i]} for i in range(n)]


@settings(max_examples=400, deadline=None)
@given(_arrow_leads())
def test_the_attribute_arrays_are_read_as_the_attribute_columns(drawn: tuple[list[str], list[str], list[dict[str, object]]]) -> None:
    keys, kinds, many = drawn
    arrays = [(key, pa.array([lead.get(key) for lead in many], _ARROW_TYPES[kind][0]), np.array([key in lead for lead in many], dtype=bool))
              for key, kind in zip(keys, kinds, strict=True)]  # fmt: skip
    columns = [_COLUMNS_SCHEMA.column(key).name for key in keys if key != "other"]
    float_text = any(kind == "float" and key != "other" and _COLUMNS_SCHEMA.column(key).kind != "number" for key, kind in zip(keys, kinds, strict=True))
    if "other" in keys or len(set(columns)) < len(columns) or float_text:  # the pydantic path's: extra keys in order, a key twice, 3 and 3.0
        with pytest.raises(ValueError, match="attributes"):
            _COLUMNS_SCHEMA.normalise_attribute_arrays(len(many), arrays)
        return
    read = _COLUMNS_SCHEMA.normalise_attribute_arrays(len(many), arrays)
    expected = _COLUMNS_SCHEMA.normalise_attribute_columns(many)

    assert read.unreadable.tolist() == expected.unreadable.tolist()
    assert read.given == expected.given and read.extra == expected.extra
    assert repr(read.columns) == repr(expected.columns)  # -0.0 is not 0.0, and NaN is NaN
    assert len(set(read.names_sent.tolist())) == len(set(read.given))  # one index per names sent


def test_arrow_halves_a_chunk_around_a_broken_line_and_gives_up_on_a_mixed_one(ruled_model: ScoringModel, simulated_dataset, as_of: datetime,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    plain = [json.dumps(lead) for lead in _plain_leads(simulated_dataset, as_of, 50)]
    numbered = list(enumerate([*plain[:30] * 10, "{broken", *plain[30:] * 10], start=1))
    tables: list[int] = []
    arrow_table = lines_module._arrow_table
    monkeypatch.setattr(lines_module, "_arrow_table", lambda lines: (tables.append(len(lines)), arrow_table(lines))[1])
    monkeypatch.setattr(lines_module, "ARROW_MIN_LINES", 1)  # halved down to the broken line itself

    parts, left = _arrow_parts(ruled_model.schema, numbered)

    assert [line for _n, line in left] == ["{broken"]  # every other line read by Arrow
    assert sorted(n for numbers, _columns in parts for n in numbers) == [n for n, line in numbered if line != "{broken"]
    assert len(tables) <= 1 + 2 * (math.ceil(math.log2(len(numbered))) + 1)  # two halves a level: logarithmic

    # A field of two kinds throughout (a count sent as a number and as text): both halves fail, no further halving.
    mixed = [json.dumps({**json.loads(line), "attributes": {"employee_count": "12" if k % 2 else 12}}) for k, line in enumerate(plain * 10)]
    tables.clear()
    parts, left = _arrow_parts(ruled_model.schema, list(enumerate(mixed, start=1)))

    assert parts == [] and len(left) == len(mixed)
    assert tables == [500, 250, 250]


def _edge(lead: dict[str, Any], case: str) -> str:
    # One line at an edge of what `_LeadLine` accepts, in a shape Arrow reads with common lines.
    lead = json.loads(json.dumps(lead))
    first = {"type": "page_view", "occurred_at": lead["created_at"], "channel": None, "properties": None}
    edits: dict[str, Any] = {
        "lead_id empty": {"lead_id": ""}, "lead_id 201": {"lead_id": "x" * 201}, "lead_id 201 chars": {"lead_id": "\u00e9" * 201},
        "lead_id 200 chars": {"lead_id": "\u00e9" * 200}, "lead_id null": {"lead_id": None}, "created_at null": {"created_at": None},
        "type empty": {"interactions": [{**first, "type": ""}]}, "type 101": {"interactions": [{**first, "type": "x" * 101}]},
        "type 101 chars": {"interactions": [{**first, "type": "\u00e9" * 101}]}, "type 100 chars": {"interactions": [{**first, "type": "\u00e9" * 100}]},
        "type null": {"interactions": [{**first, "type": None}]}, "time null": {"interactions": [{**first, "occurred_at": None}]},
        "event null": {"interactions": [None]}, "interactions null": {"interactions": None}, "attributes null": {"attributes": None},
        "interactions empty": {"interactions": []}, "attributes empty": {"attributes": {}}, "channel": {"interactions": [{**first, "channel": "web"}]},
        "too many events": {"interactions": [first] * 5_001}, "most events": {"interactions": [first] * 5_000},
        "attribute null": {"attributes": {**lead["attributes"], "industry": None}},
        "attribute null, a backslash": {"attributes": {**lead["attributes"], "industry": None, "job_role": "a\\b"}},
        "attribute null, spaced": {"attributes": {**lead["attributes"], "industry": None}},
        "attribute left out, its name a value": {"attributes": {**{k: v for k, v in lead["attributes"].items() if k != "industry"}, "job_role": "industry"}},
        "attribute left out": {"attributes": {k: v for k, v in lead["attributes"].items() if k != "industry"}},
        "attributes reordered": {"attributes": dict(reversed(list(lead["attributes"].items())))},
        "count NaN": {"attributes": {**lead["attributes"], "employee_count": float("nan")}},
        "count Infinity": {"attributes": {**lead["attributes"], "employee_count": float("-inf")}},
        "count integer": {"attributes": {**lead["attributes"], "employee_count": 12}},
    }  # fmt: skip
    if case == "no interactions key":
        del lead["interactions"]
    elif case == "no attributes key":
        del lead["attributes"]
    else:
        lead.update(edits[case])
    return json.dumps(lead).replace('"industry": null', '"industry" \t: null') if case == "attribute null, spaced" else json.dumps(lead)


_EDGES = ["lead_id empty", "lead_id 201", "lead_id 201 chars", "lead_id 200 chars", "lead_id null", "created_at null", "type empty",
          "type 101", "type 101 chars", "type 100 chars", "type null", "time null", "event null", "interactions null", "attributes null",
          "interactions empty", "attributes empty", "channel", "too many events", "most events", "attribute null", "attribute null, a backslash", "attribute null, spaced",
          "attribute left out, its name a value", "attribute left out",
          "attributes reordered", "count NaN", "count Infinity", "count integer", "no interactions key", "no attributes key"]  # fmt: skip


_READ_BY_ARROW = {"lead_id 200 chars", "type 100 chars", "interactions empty", "attributes empty", "channel", "most events", "attribute null",
                  "attribute null, spaced", "attribute left out, its name a value", "attribute left out", "attributes reordered", "count integer"}


@pytest.mark.parametrize("case", _EDGES)
def test_a_line_at_an_edge_among_lines_arrow_reads_gets_its_answer(ruled_model: ScoringModel, simulated_dataset, as_of: datetime,
                                                                   tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str) -> None:  # fmt: skip
    plain = [lead for lead in _plain_leads(simulated_dataset, as_of, 120) if None not in lead["attributes"].values()][:80]
    lines = [json.dumps(lead) for lead in plain]
    lines.insert(40, _edge(plain[0] | {"lead_id": "edge"}, case))
    source = tmp_path / "leads.jsonl"
    source.write_text("\n".join(lines) + "\n")
    by_arrow: list[int] = []
    arrow_parts = lines_module._arrow_parts
    monkeypatch.setattr(lines_module, "_arrow_parts", lambda schema, numbered: (
        found := arrow_parts(schema, numbered), by_arrow.extend(n for numbers, _columns in found[0] for n in numbers))[0])  # fmt: skip

    expected = _score_lines_one_by_one(source, tmp_path / "ref.jsonl", ruled_model, as_of, reasons=False, language="en")
    errors = score_lines(source, tmp_path / "new.jsonl", ruled_model, as_of, reasons=False, language="en", console=_Quiet())

    assert _files(tmp_path / "new.jsonl") == _files(tmp_path / "ref.jsonl")
    assert errors == expected
    assert len(by_arrow) >= 80  # Arrow read the common lines
    assert (41 in by_arrow) == (case in _READ_BY_ARROW)  # and this one where it reads to _LeadLine's values


@pytest.mark.parametrize("other", ["null", "  null ", "true", "5", '"text"', "[]", "[null]", '{"lead_id": "x"} trailing'])
def test_a_line_that_is_not_an_object_is_never_given_to_arrow(ruled_model: ScoringModel, simulated_dataset, as_of: datetime,
                                                              tmp_path: Path, other: str) -> None:  # fmt: skip
    # pyarrow 25 crashes the process on a chunk whose first line is `null`: such lines go to pydantic, which names them.
    plain = [json.dumps(lead) for lead in _plain_leads(simulated_dataset, as_of, 10)]
    source = tmp_path / "leads.jsonl"
    source.write_text("\n".join([other, *plain, other]) + "\n")

    expected = _score_lines_one_by_one(source, tmp_path / "ref.jsonl", ruled_model, as_of, reasons=False, language="en")
    errors = score_lines(source, tmp_path / "new.jsonl", ruled_model, as_of, reasons=False, language="en", console=_Quiet())

    assert _files(tmp_path / "new.jsonl") == _files(tmp_path / "ref.jsonl")
    assert errors == expected and [e["line"] for e in errors] == [1, 12]
