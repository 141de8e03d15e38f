"""The MLflow model registry as leadscore uses it: bundles as model versions, `champion` alias.

Shared by training (register, promote, roll back) and serving (load the champion), so it
depends on nothing but MLflow and the bundle format.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:  # mlflow is imported lazily: it is slow
    from mlflow import MlflowClient

CHAMPION = "champion"
BUNDLE_ARTIFACT = "bundle"
# Set on a version when it becomes champion: the version it replaced, for `leadscore rollback`.
PREVIOUS_CHAMPION_TAG = "previous_champion"


class RegistryConfig(BaseModel):
    """Where runs and models go. MLFLOW_TRACKING_URI, when set, wins over `tracking_uri`."""

    model_config = ConfigDict(extra="forbid")

    tracking_uri: str = "sqlite:///.leadscore/mlflow.db"
    artifact_location: str = ".leadscore/mlartifacts"
    experiment: str = "leadscore"
    model_name: str = "leadscore"

    def resolved_tracking_uri(self) -> str:
        return os.environ.get("MLFLOW_TRACKING_URI") or self.tracking_uri


class RegistryError(RuntimeError):
    """The registry could not be read: not the same as "no champion", which would let any model in."""


def mlflow_client(registry: RegistryConfig, *, must_exist: bool = False) -> MlflowClient:
    """An MlflowClient on the configured tracking URI (MLFLOW_TRACKING_URI wins).

    Args:
        registry: Where the registry is.
        must_exist: Refuse a SQLite registry whose file does not exist instead of creating
            an empty one (readers: the service, `leadscore rollback`); training creates it.

    Raises:
        RegistryError: `must_exist` and there is no such SQLite file.
    """
    import mlflow
    from mlflow import MlflowClient

    uri = registry.resolved_tracking_uri()
    if uri.startswith("sqlite:///"):
        database = Path(uri.removeprefix("sqlite:///"))
        if must_exist and not database.is_file():
            raise RegistryError(f"registry {uri}: no such database ({database} does not exist)")
        database.parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri)


def _read_errors() -> tuple[type[Exception], ...]:
    """What reading a registry raises when its store is damaged or unreachable."""
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    # SQLAlchemyError: a damaged SQLite file fails while MLflow opens its store, before MLflow
    # wraps errors; OSError covers an unreachable tracking server (requests' errors are OSErrors).
    return (MlflowException, SQLAlchemyError, OSError)


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return f"{error.__class__.__name__}: {lines[0] if lines else ''}"


def champion_version(registry: RegistryConfig, *, must_exist: bool = False) -> str | None:
    """The registry version the `champion` alias points to, or None when there is none.

    Args:
        registry: Where the registry is.
        must_exist: A missing SQLite registry is an error, not an empty registry (`mlflow_client`).

    Raises:
        RegistryError: The registry answered with anything but "no such model" or "no such
            alias" (a locked or damaged database, a server error), or is missing and
            `must_exist`: the caller must not read it as no champion.
    """
    from mlflow.exceptions import MlflowException

    try:
        client = mlflow_client(registry, must_exist=must_exist)
        return str(client.get_model_version_by_alias(registry.model_name, CHAMPION).version)
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST" or (
            error.error_code == "INVALID_PARAMETER_VALUE" and f"alias {CHAMPION} not found" in str(error)
        ):
            return None
        raise RegistryError(
            f"registry {registry.resolved_tracking_uri()}: cannot read the '{CHAMPION}' alias of model "
            f"'{registry.model_name}': {error.error_code}: {str(error).splitlines()[0]}"
        ) from error
    except _read_errors() as error:
        raise RegistryError(
            f"registry {registry.resolved_tracking_uri()}: cannot read the '{CHAMPION}' alias of model "
            f"'{registry.model_name}': {_first_line(error)}"
        ) from error


def download_version(registry: RegistryConfig, version: str, destination: Path | None = None) -> Path:
    """Download a registered version's bundle folder and return its local path.

    Raises:
        RegistryError: The version or its files cannot be read, naming the version.
    """
    import mlflow

    try:
        client = mlflow_client(registry, must_exist=True)
        source = client.get_model_version(registry.model_name, version).source
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=source, dst_path=str(destination) if destination else None
        )
    except _read_errors() as error:
        raise RegistryError(
            f"registry {registry.resolved_tracking_uri()}: cannot download version {version} of model "
            f"'{registry.model_name}': {_first_line(error)}"
        ) from error
    return Path(local)


def champion_bundle_path(registry: RegistryConfig | None = None) -> tuple[Path, str]:
    """Local folder of the champion bundle and its registry version.

    A missing SQLite registry is an error (`RegistryError`), not an empty one created here.

    Raises:
        LookupError: No model is registered under the name, or none holds the alias.
        RegistryError: The registry is missing or cannot be read.
    """
    registry = registry or RegistryConfig()
    version = champion_version(registry, must_exist=True)
    if version is None:
        raise LookupError(
            f"no '{CHAMPION}' model under the name '{registry.model_name}' at "
            f"{registry.resolved_tracking_uri()}: train one with `leadscore train`, or set "
            "LEADSCORE_BUNDLE to a bundle folder"
        )
    return download_version(registry, version), version


def set_champion(registry: RegistryConfig, version: str) -> None:
    mlflow_client(registry).set_registered_model_alias(registry.model_name, CHAMPION, version)


def registry_from_env() -> RegistryConfig:
    """Registry settings for processes configured by environment (the service): `MLFLOW_TRACKING_URI`
    and `LEADSCORE_MODEL_NAME` (`model.settings`)."""
    from model.settings import load_settings

    return RegistryConfig(
        tracking_uri=os.environ.get("MLFLOW_TRACKING_URI", RegistryConfig().tracking_uri),
        model_name=load_settings().model_name,
    )


def rollback_champion(registry: RegistryConfig) -> tuple[str, str]:
    """Move `champion` back to the version it replaced; returns (from, to).

    Raises:
        LookupError: There is no champion, or it replaced none.
        RegistryError: The registry does not exist (none is created) or cannot be read or written.
    """
    current = champion_version(registry, must_exist=True)
    if current is None:
        raise LookupError(f"no '{CHAMPION}' for model '{registry.model_name}': nothing to roll back")
    try:
        client = mlflow_client(registry, must_exist=True)
        tags = client.get_model_version(registry.model_name, current).tags
        previous = tags.get(PREVIOUS_CHAMPION_TAG)
        if not previous:
            raise LookupError(f"champion v{current} replaced no earlier version: nothing to roll back to")
        set_champion(registry, previous)
        client.set_model_version_tag(registry.model_name, current, "rolled_back", "true")
    except _read_errors() as error:
        raise RegistryError(
            f"registry {registry.resolved_tracking_uri()}: cannot roll back model '{registry.model_name}': "
            f"{_first_line(error)}"
        ) from error
    return current, previous
