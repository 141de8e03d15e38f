"""The score log: one record per scored lead, for drift monitoring and audits, no personal data.

A record holds a keyed hash of the lead_id (`lead_pseudonym`), the model's feature values,
the probability, score and tier, the model version, the `as_of` scored and when it was logged.
Never the lead_id itself, an email, a name or a phone number: the features are derived values
(the email is only its domain kind: corporate, free, disposable, invalid).

Where records go is a target string (`LEADSCORE_SCORE_LOG` for the service):
- a file path, e.g. `.leadscore/scores.jsonl`: JSON lines, appended under an exclusive lock;
- a SQLAlchemy URL, e.g. `sqlite:///.leadscore/scores.db`: the table `score_log`.

`leadscore forget LEAD_ID` hashes the id with the same key and deletes its records (right to
erasure); `leadscore monitor` reads records back (`model.monitoring`).

The hash key is `LEADSCORE_LEAD_KEY`, else the file `lead_key` of the state folder (created on
first use). A keyed hash, unlike a bare sha256, cannot be reversed by hashing a list of known
emails without the key; losing the key means `forget` can no longer find a lead's records.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from model.settings import load_settings
from model.state import read_or_create_secret

SCORE_LOG_ENV = "LEADSCORE_SCORE_LOG"
LEAD_KEY_ENV = "LEADSCORE_LEAD_KEY"
LEAD_KEY_FILE = "lead_key"
PSEUDONYM_HEX = 32  # 128 bits: collisions between leads are out of reach
RECORD_COLUMNS = ("logged_at", "lead", "model_version", "as_of", "probability", "score", "tier", "features")


class ScoreLogError(RuntimeError):
    """The score log cannot be opened, written or read; the message names the target."""


def lead_key(create: bool = True) -> bytes:
    """The key of the lead-id hash: `$LEADSCORE_LEAD_KEY`, else the state folder's `lead_key` file.

    Args:
        create: Create the file when it does not exist (the service); tools that look records
            up (`leadscore forget`) pass False: a new key would match nothing.

    Raises:
        ValueError: The variable is set but shorter than 16 characters, or there is no key
            and `create` is False.
    """
    settings = load_settings()  # a key shorter than 16 characters is refused there, naming the variable
    if settings.lead_key is not None:
        return settings.lead_key.get_secret_value().encode()
    path = settings.state_dir / LEAD_KEY_FILE
    if not create and not path.is_file():
        raise ValueError(
            f"no lead key: {LEAD_KEY_ENV} is not set and {path} does not exist; use the key of the service that "
            "wrote the score log"
        )
    return read_or_create_secret(path).value.encode()


def lead_pseudonym(lead_id: str, key: bytes) -> str:
    """How logs name a lead: HMAC-SHA256 of its lead_id (which may be an email), 32 hex digits."""
    return hmac.new(key, lead_id.encode("utf-8"), hashlib.sha256).hexdigest()[:PSEUDONYM_HEX]


@dataclass(frozen=True)
class ScoreRecord:
    """One scored lead, as the score log keeps it.

    Attributes:
        logged_at: When the score was given (UTC).
        lead: `lead_pseudonym` of the lead_id.
        model_version: The bundle that scored.
        as_of: The time the lead was scored as of (UTC).
        probability: Calibrated probability.
        score: 0-100 score.
        tier: hot, warm or cold.
        features: Feature name -> value the model saw (None for missing).
    """

    logged_at: datetime
    lead: str
    model_version: str
    as_of: datetime
    probability: float
    score: int
    tier: str
    features: dict[str, object]

    def to_json(self) -> dict[str, Any]:
        return {
            "logged_at": self.logged_at.astimezone(UTC).isoformat(),
            "lead": self.lead,
            "model_version": self.model_version,
            "as_of": self.as_of.astimezone(UTC).isoformat(),
            "probability": self.probability,
            "score": self.score,
            "tier": self.tier,
            "features": {k: _json_value(v) for k, v in self.features.items()},
        }


def _json_value(value: object) -> object:
    # NaN is how a missing number travels in a feature row; JSON has null for it.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class ScoreLog(Protocol):
    """Where score records are kept."""

    def write(self, records: Sequence[ScoreRecord]) -> None: ...

    def read(self, since: datetime | None = None) -> tuple[pd.DataFrame, int]:
        """Records logged at or after `since` (all when None).

        Returns:
            (rows with the columns `RECORD_COLUMNS`, `features` holding dicts; records that
            could not be read, such as a line cut short by a crash).
        """
        ...

    def forget(self, lead: str) -> int:
        """Delete every record of the lead with this pseudonym; returns how many."""
        ...

    def describe(self) -> str: ...


def open_score_log(target: str, *, create: bool = True) -> ScoreLog:
    """A SQL score log when `target` is a SQLAlchemy URL (has `://`), else a JSON lines file.

    Args:
        target: A file path or a SQLAlchemy URL.
        create: Create the file, database or table when missing (the service); tools that
            read or erase records (`leadscore monitor`, `leadscore forget`) pass False, so that
            a mistyped target is refused instead of created empty.

    Raises:
        ScoreLogError: The target cannot be opened, or does not exist and `create` is False.
    """
    if "://" in target:
        return SqlScoreLog(target, create=create)
    if not create and not Path(target).is_file():
        raise ScoreLogError(f"score log {target}: no such file")
    return JsonLinesScoreLog(Path(target))


def _owner_only(path: Path, flags: int) -> None:
    """Create `path` with mode 0600 when missing; a file of ours that others may read is made 0600.

    A log written by an earlier version (0644) would otherwise stay readable by every user of the
    machine; a file owned by someone else keeps its mode (changing it is theirs to do).
    """
    descriptor = os.open(path, flags | os.O_CREAT, 0o600)
    try:
        status = os.fstat(descriptor)
        if status.st_uid == os.geteuid() and status.st_mode & 0o077:
            os.fchmod(descriptor, 0o600)
    finally:
        os.close(descriptor)


def _frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows), columns=list(RECORD_COLUMNS))
    for column in ("logged_at", "as_of"):
        frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
    return frame


class JsonLinesScoreLog:
    """Records as JSON lines in one file, appended and rewritten under `flock`.

    Appends take the lock so that lines from several workers never interleave; `forget`
    rewrites the file in place (same inode) under the same lock, so a writer holding the file
    open keeps appending to the file everybody reads.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _owner_only(path, os.O_WRONLY | os.O_APPEND)
        except OSError as exc:
            raise ScoreLogError(f"score log {path}: cannot create it: {exc.strerror}") from exc

    def describe(self) -> str:
        return f"JSON lines file {self.path}"

    def write(self, records: Sequence[ScoreRecord]) -> None:
        text = "".join(json.dumps(r.to_json(), separators=(",", ":")) + "\n" for r in records)
        try:
            with self.path.open("a", encoding="utf-8") as sink:
                fcntl.flock(sink, fcntl.LOCK_EX)
                try:
                    sink.write(text)
                    sink.flush()
                finally:
                    fcntl.flock(sink, fcntl.LOCK_UN)
        except OSError as exc:
            raise ScoreLogError(f"score log {self.path}: cannot append: {exc.strerror}") from exc

    def read(self, since: datetime | None = None) -> tuple[pd.DataFrame, int]:
        rows, unreadable = [], 0
        try:
            with self.path.open(encoding="utf-8") as source:
                for line in source:
                    try:
                        record = json.loads(line)
                        rows.append({c: record[c] for c in RECORD_COLUMNS})
                    except (json.JSONDecodeError, KeyError, TypeError):
                        unreadable += 1
        except OSError as exc:
            raise ScoreLogError(f"score log {self.path}: cannot read: {exc.strerror}") from exc
        frame = _frame(rows)
        if since is not None:
            frame = frame[frame["logged_at"] >= pd.Timestamp(since)].reset_index(drop=True)
        return frame, unreadable

    def forget(self, lead: str) -> int:
        try:
            with self.path.open("r+", encoding="utf-8") as log:
                fcntl.flock(log, fcntl.LOCK_EX)
                try:
                    lines = log.readlines()
                    kept = [line for line in lines if not _names(line, lead)]
                    if len(kept) != len(lines):
                        log.seek(0)
                        log.writelines(kept)
                        log.truncate()
                        log.flush()
                        os.fsync(log.fileno())
                finally:
                    fcntl.flock(log, fcntl.LOCK_UN)
        except OSError as exc:
            raise ScoreLogError(f"score log {self.path}: cannot rewrite: {exc.strerror}") from exc
        return len(lines) - len(kept)


def _names(line: str, lead: str) -> bool:
    try:
        record = json.loads(line)
        return bool(record.get("lead") == lead)
    except (json.JSONDecodeError, AttributeError):
        return lead in line  # a line cut short: erase it if it may be the lead's


class SqlScoreLog:
    """Records in the table `score_log` of a SQL database (created when missing).

    Times are stored as UTC without a zone, which every SQL backend keeps as written.
    """

    def __init__(self, url: str, *, create: bool = True) -> None:
        """Open the table, creating it (and a SQLite file, mode 0600, with its folder) unless `create` is False.

        Raises:
            ScoreLogError: The URL cannot be opened, or with `create` False the SQLite file or
                the table does not exist.
        """
        import sqlalchemy as sa
        from sqlalchemy.exc import ArgumentError, SQLAlchemyError

        self._sa = sa
        self._errors = SQLAlchemyError
        self.url = url
        try:
            parsed = sa.make_url(url)
            connect_args = {"timeout": 30} if parsed.get_backend_name() == "sqlite" else {}
            if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
                database = Path(parsed.database)
                if not create and not database.is_file():
                    raise ScoreLogError(f"score log {self.describe()}: no such database ({database} does not exist)")
                database.parent.mkdir(parents=True, exist_ok=True)
                # Created by us with 0600 before SQLite opens it (it would create it 0644): the
                # records are pseudonymous, not public.
                _owner_only(database, os.O_RDWR)
            self.engine = sa.create_engine(url, connect_args=connect_args)
            if not create and not sa.inspect(self.engine).has_table("score_log"):
                raise ScoreLogError(f"score log {self.describe()}: no such database table score_log")
            metadata = sa.MetaData()
            self.table = sa.Table(
                "score_log",
                metadata,
                sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
                sa.Column("logged_at", sa.DateTime, nullable=False, index=True),
                sa.Column("lead", sa.String(PSEUDONYM_HEX), nullable=False, index=True),
                sa.Column("model_version", sa.String(100), nullable=False),
                sa.Column("as_of", sa.DateTime, nullable=False),
                sa.Column("probability", sa.Float, nullable=False),
                sa.Column("score", sa.Integer, nullable=False),
                sa.Column("tier", sa.String(8), nullable=False),
                sa.Column("features", sa.JSON, nullable=False),
            )
            metadata.create_all(self.engine)
        except (ArgumentError, SQLAlchemyError, OSError) as exc:
            raise ScoreLogError(f"score log {self.describe()}: cannot open: {exc}") from exc

    def describe(self) -> str:
        from sqlalchemy.exc import ArgumentError

        try:
            where = self._sa.make_url(self.url).render_as_string(hide_password=True)
        except ArgumentError:
            where = "an unparsable URL"
        return f"SQL table score_log at {where}"

    def write(self, records: Sequence[ScoreRecord]) -> None:
        rows = [
            {
                **record.to_json(),
                "logged_at": _naive_utc(record.logged_at),
                "as_of": _naive_utc(record.as_of),
            }
            for record in records
        ]
        try:
            with self.engine.begin() as connection:
                connection.execute(self.table.insert(), rows)
        except self._errors as exc:
            raise ScoreLogError(f"score log {self.describe()}: cannot insert: {exc.__class__.__name__}") from exc

    def read(self, since: datetime | None = None) -> tuple[pd.DataFrame, int]:
        query = self._sa.select(*(self.table.c[c] for c in RECORD_COLUMNS)).order_by(self.table.c.id)
        if since is not None:
            query = query.where(self.table.c.logged_at >= _naive_utc(since))
        try:
            with self.engine.connect() as connection:
                rows = [dict(row._mapping) for row in connection.execute(query)]
        except self._errors as exc:
            raise ScoreLogError(f"score log {self.describe()}: cannot read: {exc.__class__.__name__}") from exc
        for row in rows:
            row["logged_at"] = row["logged_at"].isoformat() + "+00:00"
            row["as_of"] = row["as_of"].isoformat() + "+00:00"
        return _frame(rows), 0

    def forget(self, lead: str) -> int:
        try:
            with self.engine.begin() as connection:
                return connection.execute(self.table.delete().where(self.table.c.lead == lead)).rowcount
        except self._errors as exc:
            raise ScoreLogError(f"score log {self.describe()}: cannot delete: {exc.__class__.__name__}") from exc


def _naive_utc(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None)
