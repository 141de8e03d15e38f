"""A data folder in the contract's own format: `leads` and `interactions` as CSV or Parquet.

The folder may hold a `meta.json` whose `export_at` (ISO 8601) is the export time, as
`leadscore simulate` writes it; it is then the data end. Without it the data ends at the latest
lead creation.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pandas as pd

from features.contract import ContractError, Dataset, as_utc, validate
from features.spec import FeatureSpec


def _read_table(directory: Path, stem: str, required: bool = True) -> pd.DataFrame | None:
    """The table `stem` of the folder, None when there is none and it is not `required`.

    Raises:
        ContractError: A required table is missing or has no rows (a header only), or a file
            has not even a header, naming the file.
    """
    for suffix, reader in ((".parquet", pd.read_parquet), (".csv", _read_csv), (".csv.gz", _read_csv)):
        path = directory / f"{stem}{suffix}"
        if path.exists():
            table = reader(path)
            # Interactions may be a header only (none recorded); leads may not, nor any table be void.
            if table.empty and (required or not len(table.columns)):
                what = "no rows, only a header" if len(table.columns) else "no header and no rows"
                raise ContractError(f"{path}: {what}: nothing to read")
            return table
    if not required:
        return None
    raise ContractError(f"{directory}: no {stem}.parquet, {stem}.csv or {stem}.csv.gz")


def _no_interactions() -> pd.DataFrame:
    return pd.DataFrame({"lead_id": pd.Series(dtype="string"), "occurred_at": pd.Series(dtype="string"), "type": pd.Series(dtype="string")})


def _read_csv(path: Path) -> pd.DataFrame:
    # Everything as text: the contract, not pandas' guessing, decides what a column is.
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:  # not even a header: the same as no rows, for the caller to name
        return pd.DataFrame()


META_FILE = "meta.json"
EXPORT_TIME_KEY = "export_at"


def folder_export_time(directory: Path) -> pd.Timestamp | None:
    """The `export_at` of the folder's meta.json, or None when there is no such file or key.

    Raises:
        ContractError: meta.json is not JSON, or its `export_at` is not a timestamp.
    """
    path = directory / META_FILE
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ContractError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(meta, dict) or meta.get(EXPORT_TIME_KEY) is None:
        return None
    try:
        return as_utc(meta[EXPORT_TIME_KEY])
    except (TypeError, ValueError) as error:
        raise ContractError(f"{path}: {EXPORT_TIME_KEY} {meta[EXPORT_TIME_KEY]!r} is not a timestamp") from error


def load_dataset(directory: Path | str, spec: FeatureSpec, exported_at: datetime | pd.Timestamp | None = None) -> Dataset:
    """Read `leads` and `interactions` (CSV or Parquet) from a folder and validate them.

    Args:
        directory: Folder with leads.{parquet,csv,csv.gz} and, when the leads have any,
            interactions.{parquet,csv,csv.gz} (no file: no interactions).
        spec: Feature specification declaring the attribute columns.
        exported_at: The export time; None reads `export_at` from the folder's meta.json, and
            without one the data ends at the latest lead creation.

    Returns:
        The validated `Dataset`.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ContractError(f"{directory}: no such data folder")
    when = exported_at if exported_at is not None else folder_export_time(directory)
    leads = _read_table(directory, "leads")
    assert leads is not None
    interactions = _read_table(directory, "interactions", required=False)
    return validate(leads, _no_interactions() if interactions is None else interactions, spec, when)
