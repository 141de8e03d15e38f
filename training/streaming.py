"""Batch scoring of a folder of parts (`sources.partitioned`), one part in memory at a time.

`leadscore score --input DATA_DIR` takes this path when DATA_DIR holds parts (`leads/`,
`interactions/`, as `leadscore prepare` writes them): each part is read, validated, its
features built and its leads scored (`model.scoring.score_table`), and its rows appended to
the output (Parquet row groups, or CSV rows) before the next part is read. Peak memory is that
of the largest part, whatever the number of parts.

Validation keeps the contract of the in-memory path: the breaches of every part are summed
rule by rule and printed as one report, and every quarantined row is written to the
quarantine CSV, part after part.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.contract import ContractError, ValidationReport
from model.bundle import ScoringModel
from model.compiled import CompileMode
from model.scoring import table_columns
from sources.partitioned import lead_parts, merge_reports, quarantine_columns, validated_parts
from training.workflow import DEFAULT_QUARANTINE, Console, EngineFactory, WorkflowError


class _QuarantineSink:
    """The quarantine CSV, opened (owner-only, truncated) at the first quarantined row and appended to."""

    def __init__(self, target: Path, columns: list[str]) -> None:
        self.target, self.columns, self.rows = target, columns, 0
        self._file: IO[str] | None = None

    def write(self, rows: pd.DataFrame, part: str) -> None:
        if rows.empty:
            return
        extra = [c for c in rows.columns if c not in self.columns]
        if extra:
            raise ContractError(f"{part}: quarantined rows have columns no part file declares: {extra}")
        if self._file is None:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            # Quarantined rows are raw CRM rows (emails, names): readable by their owner only.
            descriptor = os.open(self.target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.fchmod(descriptor, 0o600)  # a file that was there keeps its mode otherwise
            self._file = os.fdopen(descriptor, "w", encoding="utf-8", newline="")
            rows.reindex(columns=self.columns).to_csv(self._file, index=False)
        else:
            rows.reindex(columns=self.columns).to_csv(self._file, index=False, header=False)
        self.rows += len(rows)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class _ScoreSink:
    """The output file, written part by part: Parquet row groups under one schema, or CSV rows."""

    def __init__(self, out: Path, as_csv: bool) -> None:
        self.out, self.as_csv, self.rows = out, as_csv, 0
        self._parquet: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None

    def write(self, table: pd.DataFrame) -> None:
        if table.empty:
            return
        if self.as_csv:
            table.to_csv(self.out, index=False, mode="w" if self.rows == 0 else "a", header=self.rows == 0)
        else:
            arrow = pa.Table.from_pandas(table, preserve_index=False)
            if self._schema is None:
                # A part without any reason has a column of nulls: the file's column is text.
                fields = [pa.field(f.name, pa.string()) if pa.types.is_null(f.type) else f for f in arrow.schema]
                self._schema = pa.schema(fields, metadata=arrow.schema.metadata)
                self._parquet = pq.ParquetWriter(self.out, self._schema)
            assert self._parquet is not None
            self._parquet.write_table(arrow.cast(self._schema))
        self.rows += len(table)

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()


@dataclass(frozen=True)
class StreamedScores:
    """What a streamed scoring run did.

    Attributes:
        parts: Parts read.
        leads: Valid leads over all parts.
        interactions: Valid interactions over all parts.
        scored: Leads scored (written to the output).
        quarantined: Rows written to the quarantine file.
        report: The merged validation report of every part.
    """

    parts: int
    leads: int
    interactions: int
    scored: int
    quarantined: int
    report: ValidationReport


def score_parts(
    data: Path,
    out: Path,
    model: ScoringModel,
    as_of: datetime,
    *,
    quarantine_out: Path,
    scorer: Callable[..., pd.DataFrame],
    reasons: bool,
    language: str,
    compiled: CompileMode,
    progress: Callable[[str], None] | None = None,
    top_reasons: int = 1,
) -> StreamedScores:
    """Validate and score a folder of parts one part at a time, appending to `out`.

    Args:
        data: A folder of parts (`sources.partitioned.is_partitioned`).
        out: The .parquet or .csv file to write (replaced once every part is scored).
        model: The loaded bundle.
        as_of: Scoring time.
        quarantine_out: Where quarantined rows go (replaced when there is any).
        scorer: `model.scoring.score_table` or a Dask engine's `score_table`.
        reasons: Also give each lead's top reason.
        language: Language of the reasons.
        compiled: When to predict with the compiled forest.
        progress: Called with a line after each part.
        top_reasons: With reasons, reasons up per lead (`top_reason`, `reason_2`, ...).

    Returns:
        The counts and the merged report; the caller prints them.
    """
    parts = lead_parts(data)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Written under another name and renamed once every part is in: a run that stops half-way
    # leaves no `out` that looks complete.
    partial = out.with_name(out.name + ".partial")
    quarantine = _QuarantineSink(quarantine_out, quarantine_columns(parts))
    scores = _ScoreSink(partial, as_csv=out.suffix == ".csv")
    reports: list[ValidationReport] = []
    leads = interactions = 0
    finished = False
    try:
        for number, (part, dataset) in enumerate(validated_parts(data, model.spec), start=1):
            reports.append(dataset.report)
            quarantine.write(dataset.quarantine, part.name)
            leads += len(dataset.leads)
            interactions += len(dataset.interactions)
            if not dataset.leads.empty:
                scores.write(scorer(model, dataset.leads, dataset.interactions, as_of, with_reasons=reasons,
                                    language=language, compiled=compiled, top_reasons=top_reasons))
            if progress is not None:
                progress(f"  part {number}/{len(parts)} ({part.name}): {len(dataset.leads)} leads, {scores.rows} scored so far")
        finished = True
    finally:
        quarantine.close()
        scores.close()
        if not finished:
            partial.unlink(missing_ok=True)
    if scores.rows == 0:
        _empty_output(partial, as_csv=out.suffix == ".csv", columns=table_columns(model, top_reasons))
    partial.replace(out)
    return StreamedScores(len(parts), leads, interactions, scores.rows, quarantine.rows, merge_reports(reports))


def _empty_output(out: Path, as_csv: bool, columns: list[str]) -> None:
    # No lead scored: the file still has the columns, as the in-memory path writes them.
    empty = pd.DataFrame(columns=columns)
    if as_csv:
        empty.to_csv(out, index=False)
    else:
        empty.to_parquet(out, index=False)


def score_parts_folder(
    data: Path,
    out: Path,
    model: ScoringModel,
    as_of: datetime,
    *,
    reasons: bool,
    language: str,
    engine: EngineFactory,
    compiled: CompileMode,
    console: Console,
    top_reasons: int = 1,
) -> StreamedScores:
    """`leadscore score` on a folder of parts: `score_parts`, said as the in-memory path says it.

    Raises:
        WorkflowError: A part cannot be read under the contract, or no lead of any part is valid
            (the output is then removed, as the in-memory path writes none).
    """
    from tqdm import tqdm

    from model.scoring import score_table

    try:
        n_parts = len(lead_parts(data))
        with engine() as dask, tqdm(total=n_parts, desc="scoring parts", unit="part", disable=None) as bar:
            result = score_parts(
                data, out, model, as_of, quarantine_out=DEFAULT_QUARANTINE,
                scorer=score_table if dask is None else dask.score_table, reasons=reasons, language=language,
                compiled=compiled, progress=lambda _line: bar.update(1), top_reasons=top_reasons,
            )
    except ContractError as error:
        raise WorkflowError(str(error)) from error
    console.say(f"data: {result.leads} leads, {result.interactions} interactions from {data} "
                f"({result.parts} parts, read and scored one at a time)")
    end = result.report.data_end_line()
    for line in result.report.lines():
        (console.say if line == end else console.warn)(f"  {line}")
    if result.quarantined:
        console.warn(f"  {result.quarantined} rows set aside in {DEFAULT_QUARANTINE}")
    if result.leads == 0:
        out.unlink(missing_ok=True)
        raise WorkflowError(
            "no valid lead: every lead of the data was set aside"
            + (f" ({result.quarantined} rows in {DEFAULT_QUARANTINE}, each with the rule it broke)" if result.quarantined else "")
        )
    later = result.leads - result.scored
    console.say(f"scored {result.scored} leads to {out}" + (f"; {later} created after as_of not scored" if later else ""))
    return result


def prepare_folder(source: Path, out: Path, parts: int | None, console: Console) -> int:
    """`leadscore prepare`: a flat data folder written as a folder of parts by lead-id hash, streaming.

    Raises:
        WorkflowError: `source` has no leads table or `out` already holds parts.
    """
    from sources.partitioned import LEADS_PER_PART, prepare_partitions

    try:
        written = prepare_partitions(source, out, parts)
    except ContractError as error:
        raise WorkflowError(str(error)) from error
    per_part = "" if parts else f" (one per {LEADS_PER_PART:,} leads)"
    console.say(f"wrote {written} parts{per_part} to {out}: `leadscore score --input {out}` scores them one at a time")
    return written
