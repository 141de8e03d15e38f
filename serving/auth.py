"""API keys of the scoring service: where they come from, which role each has, which path needs which.

Keys come from, in this order:
1. `LEADSCORE_API_KEYS`: entries `KEY:ROLE` separated by commas, e.g.
   `LEADSCORE_API_KEYS="crm-7f3a...:score,ops-91c2...:admin"`;
2. `LEADSCORE_API_KEYS_FILE`: a file with one `KEY:ROLE` entry per line (`#` starts a comment),
   e.g. a mounted secret;
3. neither: the service uses the key in the state folder's `api_key` file (role admin), and
   creates it on first start, as Jupyter does with its token. `curl -H "Authorization: Bearer
   $(cat .leadscore/api_key)"` then works out of the box.

Roles: `score` may call the scoring endpoints and read the model (`/score`, `/score_batch`,
`/model`, `/report`, `/importance`); `admin` may do that and call `/admin/...` (reloading the
model). Health and documentation (`/livez`, `/healthz`, `/readyz`, `/metrics`, `/docs.json`,
the Swagger page `/`) stay open: they carry no lead data, and probes and scrapers hold no key.
Any other path needs a key (`score`), so a new endpoint is closed until listed here. The CRM
endpoints (`CRM_PATHS`) need no key: they check HubSpot's signature or Salesforce's org id and
token instead (`serving.crm`).

A key is compared with every configured key by `hmac.compare_digest`, all of them every time,
so the answer time says nothing about how much of a key was right, nor which key matched.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from model.settings import load_settings
from model.state import read_or_create_secret, state_dir

Role = Literal["score", "admin"]
ROLES: tuple[Role, ...] = ("score", "admin")
KEYS_ENV = "LEADSCORE_API_KEYS"
KEYS_FILE_ENV = "LEADSCORE_API_KEYS_FILE"
GENERATED_KEY_FILE = "api_key"
MIN_KEY_LENGTH = 16

OPEN_PATHS = frozenset({"/", "/livez", "/healthz", "/readyz", "/metrics", "/docs.json", "/schema.json"})
OPEN_PREFIXES = ("/static_content/", "/assets/")  # the Swagger page's scripts and styles
# CRMs cannot send our key: these paths (exactly) prove their caller themselves, by HubSpot's
# request signature and Salesforce's org id and URL token, before anything is scored (`serving.crm`).
HUBSPOT_PATH = "/crm/hubspot/action"
SALESFORCE_PATH = "/crm/salesforce/outbound"
CRM_PATHS = frozenset({HUBSPOT_PATH, SALESFORCE_PATH})
ADMIN_PATH = "/admin"  # and everything under it


class ApiKeyConfigError(ValueError):
    """The configured keys cannot be used; the message names the entry, never the key."""


@dataclass(frozen=True)
class ApiKeys:
    """The keys a service accepts, each with its role.

    Attributes:
        entries: (sha256 of a key, its role) pairs: the keys themselves are not kept.
        source: Where they came from, for the start-up log (never the keys themselves).
        created_key: The key this start created in the state folder (printed once), else None.
        warning: Something the operator should fix, e.g. a keys file others can read.
    """

    entries: tuple[tuple[bytes, Role], ...]
    source: str
    created_key: str | None = None
    warning: str | None = None

    def role_of(self, presented: str) -> Role | None:
        """The role of a presented key, or None when no configured key matches."""
        # Digests have one length, so the comparison time does not depend on the key's length either.
        candidate = _digest(presented)
        found: Role | None = None
        for digest, role in self.entries:
            # No early exit: every key is compared, whatever matched.
            if hmac.compare_digest(candidate, digest) and (found is None or role == "admin"):
                found = role
        return found


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def parse_entries(text: str, separator: str, origin: str) -> tuple[tuple[bytes, Role], ...]:
    """`KEY:ROLE` entries separated by `separator`; blank entries and `#` comments are skipped.

    Raises:
        ApiKeyConfigError: An entry has no role, an unknown role, or a short key; or none is given.
    """
    entries: list[tuple[bytes, Role]] = []
    for number, raw in enumerate(text.split(separator), start=1):
        entry = raw.split("#", 1)[0].strip() if separator == "\n" else raw.strip()
        if not entry:
            continue
        key, colon, role = entry.rpartition(":")
        where = f"{origin}, entry {number}"
        if not colon:
            raise ApiKeyConfigError(f"{where}: write KEY:ROLE with ROLE one of {', '.join(ROLES)}")
        if role not in ROLES:
            raise ApiKeyConfigError(f"{where}: unknown role {role!r}, expected one of {', '.join(ROLES)}")
        if len(key) < MIN_KEY_LENGTH:
            raise ApiKeyConfigError(f"{where}: the key is {len(key)} characters, at least {MIN_KEY_LENGTH} are needed")
        entries.append((_digest(key), role))
    if not entries:
        raise ApiKeyConfigError(f"{origin}: no KEY:ROLE entry")
    return tuple(entries)


def load_api_keys(environ: Mapping[str, str] | None = None) -> ApiKeys:
    """The keys from `LEADSCORE_API_KEYS`, else `LEADSCORE_API_KEYS_FILE`, else the state folder.

    Args:
        environ: Variables to read the two settings from instead of the process environment
            (`model.settings.load_settings`); the state folder is the process's either way.

    Raises:
        ApiKeyConfigError: The configured keys cannot be used.
        OSError: The keys file or the state folder cannot be read or written.
    """
    settings = load_settings(environ)
    if settings.api_keys is not None:
        return ApiKeys(parse_entries(settings.api_keys.get_secret_value(), ",", f"${KEYS_ENV}"), f"${KEYS_ENV}")
    if settings.api_keys_file is not None:
        path = settings.api_keys_file
        if not path.is_file():
            raise ApiKeyConfigError(f"${KEYS_FILE_ENV}: {path} is not a file")
        warning = None
        if path.stat().st_mode & 0o077:
            warning = f"{path} can be read by other users: chmod 600 it"
        return ApiKeys(parse_entries(path.read_text(), "\n", str(path)), f"{path} (${KEYS_FILE_ENV})", warning=warning)
    stored = read_or_create_secret(state_dir() / GENERATED_KEY_FILE)
    return ApiKeys(
        ((_digest(stored.value), "admin"),),
        f"{stored.path} (no {KEYS_ENV} or {KEYS_FILE_ENV} set)",
        created_key=stored.value if stored.created else None,
        warning=f"{stored.path} can be read by other users: chmod 600 it" if stored.too_open else None,
    )


def required_role(path: str) -> Role | None:
    """The role a request path needs: None for health and documentation and for the CRM paths
    (which verify their caller's own proof), admin for `/admin/`."""
    if path in OPEN_PATHS or path in CRM_PATHS or path.startswith(OPEN_PREFIXES):
        return None
    return "admin" if path == ADMIN_PATH or path.startswith(ADMIN_PATH + "/") else "score"


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def allows(granted: Role, needed: Role) -> bool:
    """admin implies score."""
    return granted == "admin" or granted == needed
