"""A data folder cut into parts of whole leads, read and validated one part at a time.

A folder too big for memory is laid out as parts, each holding some leads and *every*
interaction of those leads:

    DATA_DIR/
      meta.json                      optional: {"export_at": ...}, the data end (as in a flat folder)
      leads/part-00000.parquet       the leads of part 0
      interactions/part-00000.parquet  their interactions (no file: none)
      leads/part-00001.parquet ...

`prepare_partitions` writes that layout from a flat folder (leads + interactions as CSV or
Parquet, `sources.folder`) by a hash of the lead id, streaming: it never holds more than a
buffer of rows. Any layout with whole leads per part works (`benchmarks/big.py` writes its
parts by ranges of lead ids).

Each part is validated by the data contract (`features.contract.validate`) as a flat folder is:
the rules only compare a row with rows of the same lead (duplicate lead ids, interactions of
an unknown lead, repeated events), so with whole leads per part the verdicts are those of the
whole folder. The one global quantity, the data end, is taken from meta.json or, without it,
from a first pass over the leads alone (the latest valid creation of any part).
"""

from __future__ import annotations

import csv
import gzip
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from features.contract import (
    EXPORTED_AT,
    LATEST_LEAD_CREATION,
    ContractError,
    DataEnd,
    Dataset,
    RuleBreach,
    ValidationReport,
    as_utc,
    validate,
)
from features.spec import FeatureSpec
from sources.folder import META_FILE, _no_interactions, folder_export_time

LEADS_DIR = "leads"
INTERACTIONS_DIR = "interactions"
PART_GLOB = "part-*.parquet"
LEADS_PER_PART = 200_000  # ~4M interactions at 20 a lead: about 1.5 GB at the peak of a part's scoring
_EXAMPLES = 3


def is_partitioned(directory: Path) -> bool:
    """Whether `directory` is a folder of parts (it has a `leads/` folder), not a flat folder."""
    return (directory / LEADS_DIR).is_dir()


@dataclass(frozen=True)
class LeadPart:
    """One part of a partitioned folder.

    Attributes:
        name: The file name, e.g. "part-00003.parquet".
        leads: Its leads file.
        interactions: Its interactions file; None when the part has none.
    """

    name: str
    leads: Path
    interactions: Path | None


def lead_parts(directory: Path) -> list[LeadPart]:
    """The parts of a partitioned folder, in file-name order.

    Raises:
        ContractError: The folder has no leads part, or an interactions file has no leads file
            of the same name (its rows would belong to no lead).
    """
    leads = sorted((directory / LEADS_DIR).glob(PART_GLOB))
    if not leads:
        raise ContractError(f"{directory / LEADS_DIR}: no {PART_GLOB} file: nothing to read")
    interactions = {p.name: p for p in (directory / INTERACTIONS_DIR).glob(PART_GLOB)}
    orphans = sorted(set(interactions) - {p.name for p in leads})
    if orphans:
        raise ContractError(
            f"{directory / INTERACTIONS_DIR}: {len(orphans)} part(s) without a leads part of the same name "
            f"(e.g. {', '.join(orphans[:_EXAMPLES])}): a lead's interactions must be in its own part"
        )
    return [LeadPart(p.name, p, interactions.get(p.name)) for p in leads]


def read_part(part: LeadPart) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The raw leads and interactions of a part, as `sources.folder` reads a Parquet table."""
    leads = pd.read_parquet(part.leads)
    interactions = _no_interactions() if part.interactions is None else pd.read_parquet(part.interactions)
    return leads, interactions


def folder_data_end(directory: Path, spec: FeatureSpec, parts: list[LeadPart]) -> DataEnd:
    """The data end of the whole folder: meta.json's `export_at`, else the latest valid lead creation.

    Without meta.json every part's leads are validated alone (no interactions: they do not move
    the data end), the same rules `validate` applies before it derives the end.
    """
    exported = folder_export_time(directory)
    if exported is not None:
        return DataEnd(as_utc(exported), EXPORTED_AT)
    latest: pd.Timestamp | None = None
    for part in parts:
        try:
            found = validate(pd.read_parquet(part.leads), _no_interactions(), spec).data_end
        except ContractError as error:
            raise ContractError(f"{part.leads}: {error}") from error
        if pd.notna(found) and (latest is None or found > latest):
            latest = found
    return DataEnd(pd.NaT if latest is None else latest, LATEST_LEAD_CREATION)


def validated_parts(directory: Path, spec: FeatureSpec) -> Iterator[tuple[LeadPart, Dataset]]:
    """Each part of a partitioned folder, read and validated under the folder's data end.

    Args:
        directory: A folder of parts (`is_partitioned`).
        spec: Feature specification declaring the attribute columns.

    Yields:
        Each part and its validated `Dataset`, one at a time.

    Raises:
        ContractError: As `lead_parts`, or a part lacks a required column (naming the file).
    """
    parts = lead_parts(directory)
    end = folder_data_end(directory, spec, parts)
    for part in parts:
        leads, interactions = read_part(part)
        try:
            yield part, validate(leads, interactions, spec, end)
        except ContractError as error:
            raise ContractError(f"{part.leads}: {error}") from error


def quarantine_columns(parts: list[LeadPart]) -> list[str]:
    """The columns of the folder's quarantine rows: `table`, `rule`, `lead_id`, then every column of both tables."""
    columns = ["table", "rule", "lead_id"]
    for part in parts:
        for path in (part.leads, part.interactions):
            if path is not None:
                columns.extend(n for n in pq.read_schema(path).names if n not in columns)
    if "converted_at" not in columns:
        columns.append("converted_at")  # validation adds it to leads that lack it
    return columns


def merge_reports(reports: list[ValidationReport]) -> ValidationReport:
    """One report of the parts' reports: counts summed per table, rule and action, first examples kept."""
    merged = ValidationReport()
    breaches: dict[tuple[str, str, str], RuleBreach] = {}
    for report in reports:
        for b in report.breaches:
            key = (b.table, b.rule, b.action)
            seen = breaches.get(key)
            if seen is None:
                breaches[key] = RuleBreach(b.table, b.rule, b.count, list(b.examples), b.action)
                continue
            examples = seen.examples + [e for e in b.examples if e not in seen.examples]
            breaches[key] = RuleBreach(b.table, b.rule, seen.count + b.count, examples[:_EXAMPLES], b.action)
        for kind, n in report.unknown_types.items():
            merged.unknown_types[kind] = merged.unknown_types.get(kind, 0) + n
        if report.data_end is not None:
            merged.data_end, merged.data_end_source = report.data_end, report.data_end_source
    merged.breaches = list(breaches.values())
    return merged


def _batches(path: Path, batch_rows: int) -> Iterator[pa.RecordBatch]:
    # CSV is read as text with only "" missing, as `sources.folder` reads it: the contract decides.
    if path.suffix == ".parquet":
        yield from pads.dataset(path, format="parquet").to_batches(batch_size=batch_rows)
        return
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as text:
        header = next(csv.reader(text), None)
    if not header:
        raise ContractError(f"{path}: no header and no rows: nothing to read")
    options = pacsv.ConvertOptions(
        column_types={name: pa.string() for name in header}, null_values=[""], strings_can_be_null=True,
        quoted_strings_can_be_null=True,
    )
    reader = pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 24), convert_options=options)
    yield from reader


def _table_file(directory: Path, stem: str) -> Path | None:
    for suffix in (".parquet", ".csv", ".csv.gz"):
        if (directory / f"{stem}{suffix}").exists():
            return directory / f"{stem}{suffix}"
    return None


def part_of_lead(lead_ids: pd.Series, n_parts: int) -> np.ndarray:
    """The part of each lead id: a stable hash of the id as validation reads it (text, stripped).

    A missing or empty id goes to part 0, where validation quarantines it.
    """
    key = lead_ids.astype("string").str.strip().fillna("")
    return (pd.util.hash_pandas_object(key, index=False).to_numpy() % np.uint64(n_parts)).astype(np.int64)


def _part_count(path: Path, batch_rows: int) -> int:
    if path.suffix == ".parquet":
        return max(1, -(-pq.ParquetFile(path).metadata.num_rows // LEADS_PER_PART))
    rows = sum(b.num_rows for b in _batches(path, batch_rows))
    return max(1, -(-rows // LEADS_PER_PART))


def prepare_partitions(
    source: Path, out: Path, n_parts: int | None = None, *, batch_rows: int = 500_000, buffer_rows: int = 4_000_000
) -> int:
    """Write a flat data folder as a folder of parts by a hash of the lead id, streaming.

    Rows are moved, never judged: a bad row lands in some part, where validation reports it
    when the part is read. meta.json is copied.

    Args:
        source: A flat contract folder: leads and (optionally) interactions as .parquet, .csv
            or .csv.gz (`sources.folder`).
        out: The folder to write (`is_partitioned` afterwards); must not hold parts yet.
        n_parts: How many parts; None gives one per `LEADS_PER_PART` leads.
        batch_rows: Rows read at a time.
        buffer_rows: Rows held across all parts before they are written as row groups.

    Returns:
        The number of parts written.

    Raises:
        ContractError: `source` has no leads table, or `out` already holds parts.
    """
    leads_file = _table_file(source, "leads")
    if leads_file is None:
        raise ContractError(f"{source}: no leads.parquet, leads.csv or leads.csv.gz")
    if (out / LEADS_DIR).exists() or (out / INTERACTIONS_DIR).exists():
        raise ContractError(f"{out}: already holds parts (leads/ or interactions/): choose an empty folder")
    n_parts = n_parts or _part_count(leads_file, batch_rows)
    if n_parts < 1:
        raise ContractError(f"n_parts {n_parts}: at least one part")
    interactions_file = _table_file(source, "interactions")
    leads_schema = _write_parts(leads_file, out / LEADS_DIR, n_parts, batch_rows, buffer_rows)
    if interactions_file is not None:
        _write_parts(interactions_file, out / INTERACTIONS_DIR, n_parts, batch_rows, buffer_rows)
        # Interactions whose id no lead hashes to: a part with no lead, where validation
        # quarantines them as interactions of an unknown lead.
        for path in (out / INTERACTIONS_DIR).glob(PART_GLOB):
            if not (out / LEADS_DIR / path.name).exists() and leads_schema is not None:
                pq.write_table(leads_schema.empty_table(), out / LEADS_DIR / path.name)
    if (source / META_FILE).is_file():
        shutil.copyfile(source / META_FILE, out / META_FILE)
    return n_parts


def _write_parts(path: Path, target: Path, n_parts: int, batch_rows: int, buffer_rows: int) -> pa.Schema | None:
    # The parts of one table; returns its schema (None when the file had no batch at all).
    target.mkdir(parents=True, exist_ok=True)
    writers: dict[int, pq.ParquetWriter] = {}
    pending: dict[int, list[pa.Table]] = {}
    held = 0
    schema: pa.Schema | None = None

    def flush() -> None:
        for k, tables in pending.items():
            if k not in writers:
                writers[k] = pq.ParquetWriter(target / f"part-{k:05d}.parquet", schema)
            writers[k].write_table(pa.concat_tables(tables))
        pending.clear()

    try:
        for batch in _batches(path, batch_rows):
            table = pa.Table.from_batches([batch])
            schema = schema or table.schema
            table = table.cast(schema)
            parts = part_of_lead(table.column("lead_id").to_pandas(), n_parts)
            order = np.argsort(parts, kind="stable")  # source order kept within a part
            bounds = np.searchsorted(parts[order], np.arange(n_parts + 1))
            for k in range(n_parts):
                if bounds[k] < bounds[k + 1]:
                    pending.setdefault(k, []).append(table.take(pa.array(order[bounds[k] : bounds[k + 1]])))
            held += table.num_rows
            if held >= buffer_rows:
                flush()
                held = 0
        flush()
    finally:
        for writer in writers.values():
            writer.close()
    return schema
