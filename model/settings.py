"""Every `LEADSCORE_*` environment variable, read in one place.

`Settings` is the one list: each field is the variable `LEADSCORE_` + its name in upper case, with
its default and meaning. Training, serving and the CLI read them through `load_settings()`,
which reads the environment when called (never at import: tests and the service change it
between calls), and names the variable in its error.

| Variable | Default | Meaning |
| --- | --- | --- |
| `LEADSCORE_BUNDLE` | unset | Bundle folder the service serves; unset: the registry's `champion`. |
| `LEADSCORE_MODEL_NAME` | `leadscore` | Registered model whose `champion` the service serves. |
| `LEADSCORE_POLL_SECONDS` | `30` | How often the service looks for a new champion; 0 = never. |
| `LEADSCORE_MAX_BODY_BYTES` | `5242880` (5 MiB) | Largest request body; over it, 413. At least 1024. |
| `LEADSCORE_API_KEYS` | unset | The service's keys, `KEY:ROLE` entries separated by commas. |
| `LEADSCORE_API_KEYS_FILE` | unset | A file of `KEY:ROLE` lines, used when `LEADSCORE_API_KEYS` is unset. |
| `LEADSCORE_LEAD_KEY` | unset | Key of the lead-id hash in logs; unset: the state folder's `lead_key`. |
| `LEADSCORE_SCORE_LOG` | unset | Where the service records scores: a JSON lines file or a SQLAlchemy URL. |
| `LEADSCORE_STATE_DIR` | `.leadscore` | Local state: generated secrets, MLflow store, compiled forests. |
| `LEADSCORE_COMPILED_DIR` | `<state dir>/compiled` | Cache of compiled forests for batch scoring. |
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "LEADSCORE_"
DEFAULT_MAX_BODY_BYTES = 5 * 1024 * 1024
DEFAULT_POLL_SECONDS = 30
MIN_SECRET_LENGTH = 16


class SettingsError(ValueError):
    """A `LEADSCORE_*` variable has a value that cannot be used; the message names the variable."""


class Settings(BaseSettings):
    """The `LEADSCORE_*` environment variables: field `poll_seconds` is `LEADSCORE_POLL_SECONDS`.

    An empty variable counts as unset, as `VAR= command` is the shell's way to unset one.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, case_sensitive=False, env_ignore_empty=True, extra="ignore", frozen=True
    )

    bundle: Path | None = Field(
        default=None, description="Bundle folder the service serves; unset: the registry's champion."
    )
    model_name: Annotated[str, Field(min_length=1)] = Field(
        default="leadscore", description="Registered model whose `champion` alias the service serves."
    )
    poll_seconds: Annotated[int, Field(ge=0)] = Field(
        default=DEFAULT_POLL_SECONDS,
        description="Seconds between two looks at the registry's champion (registry mode); 0 = never.",
    )
    max_body_bytes: Annotated[int, Field(ge=1024)] = Field(
        default=DEFAULT_MAX_BODY_BYTES, description="Largest request body the service reads; larger ones get 413."
    )
    api_keys: SecretStr | None = Field(
        default=None, description='The service\'s API keys: `KEY:ROLE` entries separated by commas ("score", "admin").'
    )
    api_keys_file: Path | None = Field(
        default=None, description="A file with one `KEY:ROLE` per line (`#` comments), used when api_keys is unset."
    )
    lead_key: Annotated[SecretStr, Field(min_length=MIN_SECRET_LENGTH)] | None = Field(
        default=None,
        description="Key of the lead-id hash that logs name leads by; unset: the state folder's `lead_key` file.",
    )
    score_log: str | None = Field(
        default=None, description="Where the service records every score: a JSON lines file or a SQLAlchemy URL."
    )
    state_dir: Path = Field(
        default=Path(".leadscore"),
        description="Local state: generated secrets (api_key, lead_key), the MLflow store, compiled forests.",
    )
    compiled_dir: Path | None = Field(
        default=None, description="Cache of compiled forests for batch scoring; unset: `compiled/` in state_dir."
    )

    def resolved_compiled_dir(self) -> Path:
        """`compiled_dir`, else `compiled/` in the state folder."""
        return self.compiled_dir or self.state_dir / "compiled"


def env_name(field: str) -> str:
    """The environment variable of a `Settings` field, e.g. `LEADSCORE_POLL_SECONDS`."""
    return f"{ENV_PREFIX}{field.upper()}"


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """The settings from the process environment now, or from `environ` alone when given.

    Raises:
        SettingsError: A variable has an unusable value, e.g.
            "LEADSCORE_POLL_SECONDS: Input should be greater than or equal to 0 (got '-1')".
    """
    try:
        if environ is None:
            return Settings()
        values = {
            name[len(ENV_PREFIX) :].lower(): value
            for name, value in environ.items()
            if name.upper().startswith(ENV_PREFIX) and value != ""
        }
        return Settings.model_validate(values)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            field = str(error["loc"][0]) if error["loc"] else "?"
            shown = "" if field in {"api_keys", "lead_key"} else f" (got {error['input']!r})"
            problems.append(f"{env_name(field)}: {error['msg']}{shown}")
        raise SettingsError("; ".join(problems)) from None
