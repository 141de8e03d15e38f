"""A data folder in the contract's own format: `leads` and `interactions` as CSV or Parquet."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from features.contract import ContractError, Dataset, validate
from features.spec import FeatureSpec


def _read_table(directory: Path, stem: str) -> pd.DataFrame:
    for suffix, reader in ((".parquet", pd.read_parquet), (".csv", _read_csv), (".csv.gz", _read_csv)):
        path = directory / f"{stem}{suffix}"
        if path.exists():
            return reader(path)
    raise ContractError(f"{directory}: no {stem}.parquet, {stem}.csv or {stem}.csv.gz")


def _read_csv(path: Path) -> pd.DataFrame:
    # Everything as text: the contract, not pandas' guessing, decides what a column is.
    return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])


def load_dataset(directory: Path | str, spec: FeatureSpec) -> Dataset:
    """Read `leads` and `interactions` (CSV or Parquet) from a folder and validate them.

    Args:
        directory: Folder with leads.{parquet,csv,csv.gz} and interactions.{parquet,csv,csv.gz}.
        spec: Feature specification declaring the attribute columns.

    Returns:
        The validated `Dataset`.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ContractError(f"{directory}: no such data folder")
    return validate(_read_table(directory, "leads"), _read_table(directory, "interactions"), spec)
