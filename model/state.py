"""The local state folder (`.leadscore/`, or `LEADSCORE_STATE_DIR`) and the secrets kept in it.

The service and the CLI share two secrets that may live here when no environment variable
gives them: the API key generated for a service started without keys (`api_key`), and the
key of the lead-id hash used by logs (`lead_key`). Both are created on first use, mode 0600,
by whichever process gets there first (an exclusive create, so workers started together agree).
"""

from __future__ import annotations

import os
import secrets
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from model.settings import load_settings

# How long a process waits for another one that created a secret file to finish writing it.
_WRITE_WAIT_S = 5.0


def state_dir() -> Path:
    """`$LEADSCORE_STATE_DIR`, else `.leadscore` in the working folder (`model.settings`)."""
    return load_settings().state_dir


@dataclass(frozen=True)
class StoredSecret:
    """A secret read from, or just written to, a file of the state folder.

    Attributes:
        value: The secret.
        path: Its file.
        created: True when this process created the file (the first start).
        too_open: True when group or others may read the file (the caller warns).
    """

    value: str
    path: Path
    created: bool
    too_open: bool


def new_secret() -> str:
    """32 random bytes, URL-safe text (43 characters)."""
    return secrets.token_urlsafe(32)


def read_or_create_secret(path: Path) -> StoredSecret:
    """The secret in `path`, created (mode 0600, parents 0700) when the file does not exist.

    Raises:
        OSError: The file cannot be created or read.
        ValueError: The file exists but stays empty (another process died writing it).
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    value = new_secret()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return StoredSecret(_read_when_written(path), path, created=False, too_open=_too_open(path))
    with os.fdopen(fd, "w") as sink:
        sink.write(value + "\n")
    return StoredSecret(value, path, created=True, too_open=False)


def _read_when_written(path: Path) -> str:
    deadline = time.monotonic() + _WRITE_WAIT_S
    while True:
        value = path.read_text().strip()
        if value:
            return value
        if time.monotonic() > deadline:
            raise ValueError(f"{path} is empty: delete it and start again, a new secret will be written")
        time.sleep(0.05)


def _too_open(path: Path) -> bool:
    return bool(path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO))
