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
| `LEADSCORE_KEEP_FREED_MEMORY` | `1` | `leadscore score` keeps the memory it frees for its next arrays; `0`: malloc's defaults. |
| `LEADSCORE_LEAD_STORE` | `sqlite:///<state dir>/leads.db` | Lead store (attributes, interactions, scores, alert outbox): a SQLAlchemy URL. |
| `LEADSCORE_ALERT_WEBHOOKS` | unset | URLs (commas) that receive signed hot-lead alerts. |
| `LEADSCORE_ALERT_SECRET` | unset | Key of the alerts' HMAC-SHA256 signature; unset: the state folder's `alert_secret`. |
| `LEADSCORE_ALERT_SCORE_JUMP` | `20` | A rise of the 0-100 score by this much is an alert (entering `hot` always is); 0 = off. |
| `LEADSCORE_ALERT_RETRY_SECONDS` | `1` | Wait before the first retry of a failed delivery; doubled each time. |
| `LEADSCORE_ALERT_RETRY_MAX_SECONDS` | `600` | Longest wait between two retries. |
| `LEADSCORE_HUBSPOT_TOKEN` | unset | HubSpot private-app token: alerts are also written back to the contact. |
| `LEADSCORE_HUBSPOT_API_URL` | `https://api.hubapi.com` | HubSpot's API (a test receiver in tests). |
| `LEADSCORE_HUBSPOT_ID_PROPERTY` | unset | The contact property a lead_id is (e.g. `email`); unset: the lead_id is the contact id. |
| `LEADSCORE_CRM_CONFIG` | unset | YAML of the CRM endpoints' field maps (`serving.crm_formats.CrmConfig`). |
| `LEADSCORE_HUBSPOT_APP_SECRET` | unset | The HubSpot app's client secret; unset: `/crm/hubspot/action` refuses all. |
| `LEADSCORE_PUBLIC_URL` | unset | The service's URL as CRMs call it (`https://host`), for HubSpot's signature. |
| `LEADSCORE_SALESFORCE_ORG_IDS` | unset | Salesforce org ids (15 or 18 characters, commas) whose messages are taken. |
| `LEADSCORE_SALESFORCE_TOKEN` | unset | Secret the Salesforce endpoint URL carries (`?token=`); unset: org id only. |
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
    keep_freed_memory: bool = Field(
        default=True,
        description="`leadscore score` keeps the memory it frees for its next arrays (`model.memory`); "
        "0: glibc's malloc defaults (freed memory goes back to the system).",
    )

    crm_config: Path | None = Field(
        default=None, description="YAML of the CRM endpoints' field maps (`serving.crm_formats.CrmConfig`); unset: the defaults."
    )
    hubspot_app_secret: SecretStr | None = Field(
        default=None,
        description="The HubSpot app's client secret, which signs its requests (X-HubSpot-Signature-v3); unset: "
        "`POST /crm/hubspot/action` refuses every request.",
    )
    public_url: Annotated[str, Field(pattern=r"^https?://[^/?#]+$")] | None = Field(
        default=None,
        description="The service's scheme and host as CRMs call it (e.g. `https://scores.example.com`), which HubSpot "
        "signs; unset: the scheme and Host header of each request (right without a proxy that rewrites them).",
    )
    salesforce_org_ids: Annotated[str, Field(pattern=r"^\s*[A-Za-z0-9]{15}([A-Za-z0-9]{3})?\s*(,\s*[A-Za-z0-9]{15}([A-Za-z0-9]{3})?\s*)*$")] | None = Field(
        default=None,
        description="Salesforce organization ids (15 or 18 characters, separated by commas) whose outbound messages "
        "`POST /crm/salesforce/outbound` takes; unset: it refuses every message.",
    )
    salesforce_token: Annotated[SecretStr, Field(min_length=MIN_SECRET_LENGTH)] | None = Field(
        default=None,
        description="A secret the Salesforce endpoint URL carries (`?token=...`), checked beside the org id: the org id "
        "alone is not secret.",
    )

    lead_store: str | None = Field(
        default=None,
        description="Lead store (attributes, interactions, last scores, alert outbox): a SQLAlchemy URL (sqlite, "
        "postgresql); unset: `leads.db` in state_dir.",
    )
    alert_webhooks: str | None = Field(
        default=None, description="URLs, separated by commas, that receive a signed alert when a lead turns hot."
    )
    alert_secret: Annotated[SecretStr, Field(min_length=MIN_SECRET_LENGTH)] | None = Field(
        default=None, description="Key of the alerts' HMAC-SHA256 signature; unset: the state folder's `alert_secret` file."
    )
    alert_score_jump: Annotated[int, Field(ge=0, le=100)] = Field(
        default=20, description="A rise of the 0-100 score by this much since the last score is an alert; 0 = off."
    )
    alert_retry_seconds: Annotated[float, Field(gt=0)] = Field(
        default=1.0, description="Wait before the first retry of a failed alert delivery; doubled each retry."
    )
    alert_retry_max_seconds: Annotated[float, Field(gt=0)] = Field(
        default=600.0, description="Longest wait between two retries of an alert delivery."
    )
    hubspot_token: SecretStr | None = Field(
        default=None, description="HubSpot private-app token; set: alerts are also written back to the HubSpot contact."
    )
    hubspot_api_url: Annotated[str, Field(pattern=r"^https?://[^?#]+$")] = Field(
        default="https://api.hubapi.com", description="HubSpot's API base URL."
    )
    hubspot_id_property: str | None = Field(
        default=None,
        description="The unique contact property lead_ids are (e.g. `email`); unset: a lead_id is the HubSpot contact id.",
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
            shown = "" if field in {"api_keys", "lead_key", "hubspot_app_secret", "salesforce_token", "alert_secret", "hubspot_token"} else f" (got {error['input']!r})"
            problems.append(f"{env_name(field)}: {error['msg']}{shown}")
        raise SettingsError("; ".join(problems)) from None
