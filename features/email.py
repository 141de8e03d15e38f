"""Email domain quality: the only thing leadscore derives from an email address."""

from __future__ import annotations

import re

FREE_DOMAINS: frozenset[str] = frozenset(
    {
        "gmail.com", "googlemail.com", "yahoo.com", "yahoo.fr", "yahoo.co.uk", "hotmail.com",
        "hotmail.fr", "outlook.com", "live.com", "msn.com", "aol.com", "icloud.com", "me.com",
        "mail.com", "gmx.com", "gmx.de", "gmx.net", "web.de", "orange.fr", "free.fr", "laposte.net",
        "proton.me", "protonmail.com", "yandex.com", "yandex.ru", "zoho.com", "qq.com", "163.com",
        "rediffmail.com",
    }
)
DISPOSABLE_DOMAINS: frozenset[str] = frozenset(
    {
        "mailinator.com", "10minutemail.com", "guerrillamail.com", "tempmail.com", "temp-mail.org",
        "trashmail.com", "yopmail.com", "sharklasers.com", "getnada.com", "dispostable.com",
        "throwawaymail.com", "maildrop.cc", "fakeinbox.com",
    }
)
_ADDRESS = re.compile(r"^[^@\s]+@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})$")


def email_domain_kind(address: object) -> str | None:
    """Classify an address as corporate, free, disposable or invalid.

    Args:
        address: The raw value of the email column (anything a CRM export may hold).

    Returns:
        "corporate", "free", "disposable" or "invalid"; None when the value is missing
        (a missing email is unknown, not invalid).
    """
    if address is None or (isinstance(address, float) and address != address):
        return None
    text = str(address).strip()
    if not text:
        return None
    match = _ADDRESS.match(text)
    if match is None:
        return "invalid"
    domain = match.group(1).lower()
    if domain in DISPOSABLE_DOMAINS:
        return "disposable"
    if domain in FREE_DOMAINS:
        return "free"
    return "corporate"
