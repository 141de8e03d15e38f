"""Alerts out: the thread that drains the lead store's outbox to webhooks and HubSpot.

An alert is queued in the lead store (`model.leadstore`, table `alert_outbox`, one row per
target) in the transaction that records the score that makes it; this thread delivers it, at
least once:

- a **webhook** (`LEADSCORE_ALERT_WEBHOOKS`) gets `POST <url>` with the alert as JSON, signed:
  `X-Leadscore-Timestamp: <unix seconds>` and `X-Leadscore-Signature: v1=<hex HMAC-SHA256 of
  "<timestamp>." + body>` with the key `LEADSCORE_ALERT_SECRET` (else the state folder's
  `alert_secret`); `X-Leadscore-Alert-Id` is the alert's id, the same on every retry, for the
  receiver to deduplicate on (`verify_signature` is the receiver's check);
- **HubSpot** (`LEADSCORE_HUBSPOT_TOKEN`) gets the score written back to the contact with
  `POST /crm/v3/objects/contacts/batch/update`, `{"inputs": [{"id", "properties"}]}` and the
  token as bearer, up to 100 contacts a request; the properties are `HUBSPOT_PROPERTIES`
  (custom contact properties the portal must have).

A 2xx is delivered. A transport error, a timeout, 408, 425, 429 or a 5xx is tried again after
`LEADSCORE_ALERT_RETRY_SECONDS` (1 s), doubled each time up to `LEADSCORE_ALERT_RETRY_MAX_SECONDS`
(600 s), or after the receiver's `Retry-After` when that is longer, for as long as it takes. Any
other 4xx says the request itself is wrong (a URL that is gone, a token refused): retrying
cannot help, so the row is marked `dead` with the answer, kept, and logged as an error.

A claimed row is leased for `LEASE`: a service killed while delivering leaves it pending, and
the next start (or another worker) delivers it when the lease ends.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import httpx

from model.leadstore import AlertPolicy, LeadStore, LeadStoreError, OutboxItem
from model.settings import Settings
from model.state import read_or_create_secret

logger = logging.getLogger(__name__)

ALERT_SECRET_FILE = "alert_secret"
SIGNATURE_HEADER = "X-Leadscore-Signature"
TIMESTAMP_HEADER = "X-Leadscore-Timestamp"
ALERT_ID_HEADER = "X-Leadscore-Alert-Id"
SIGNATURE_VERSION = "v1"
SIGNATURE_TOLERANCE_S = 300  # a receiver refuses signatures older than this (replays)
WEBHOOK_PREFIX = "webhook:"
HUBSPOT_TARGET = "hubspot"
HUBSPOT_BATCH_UPDATE = "/crm/v3/objects/contacts/batch/update"
HUBSPOT_BATCH_LIMIT = 100
HUBSPOT_PROPERTIES = {
    "leadscore_score": "score",
    "leadscore_tier": "tier",
    "leadscore_probability": "probability",
    "leadscore_model_version": "model_version",
    "leadscore_top_reason": "top_reason",
}
"""HubSpot contact property -> field of the alert written into it."""
RETRYABLE = frozenset({408, 425, 429})
REQUEST_TIMEOUT_S = 5.0
LEASE = timedelta(seconds=15)  # longer than a request may take
IDLE_POLL_S = 1.0  # looks for due rows (retries, other workers' alerts) at least this often
CLAIM_LIMIT = 100
# Deliveries under way at once. One at a time, a receiver answering in 50 ms caps delivery at 20
# alerts/s and every alert after waits for the ones before it; rows are claimed only for a free
# sender, so a claimed row is settled within a request's timeout, well inside its lease.
MAX_IN_FLIGHT = 8


@dataclass(frozen=True)
class AlertConfig:
    """Where alerts go and how they are sent (from `LEADSCORE_ALERT_*` and `LEADSCORE_HUBSPOT_*`)."""

    webhooks: tuple[str, ...]
    secret: bytes
    score_jump: int
    retry_s: float
    retry_max_s: float
    hubspot_token: str | None
    hubspot_api_url: str
    hubspot_id_property: str | None

    def policy(self) -> AlertPolicy:
        targets = tuple(WEBHOOK_PREFIX + url for url in self.webhooks)
        if self.hubspot_token is not None:
            targets += (HUBSPOT_TARGET,)
        return AlertPolicy(score_jump=self.score_jump, targets=targets)


def load_alert_config(settings: Settings) -> AlertConfig:
    """The alert settings; the signing key is created in the state folder when webhooks need one and none is set.

    Raises:
        ValueError: A webhook URL that is not http(s), naming it.
    """
    webhooks = tuple(url.strip() for url in (settings.alert_webhooks or "").split(",") if url.strip())
    for url in webhooks:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"LEADSCORE_ALERT_WEBHOOKS: {url!r} is not an http(s) URL")
    if settings.alert_secret is not None:
        secret = settings.alert_secret.get_secret_value().encode()
    elif webhooks:
        secret = read_or_create_secret(settings.state_dir / ALERT_SECRET_FILE).value.encode()
    else:
        secret = b""
    return AlertConfig(
        webhooks=webhooks,
        secret=secret,
        score_jump=settings.alert_score_jump,
        retry_s=settings.alert_retry_seconds,
        retry_max_s=settings.alert_retry_max_seconds,
        hubspot_token=None if settings.hubspot_token is None else settings.hubspot_token.get_secret_value(),
        hubspot_api_url=settings.hubspot_api_url.rstrip("/"),
        hubspot_id_property=settings.hubspot_id_property,
    )


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """The `X-Leadscore-Signature` of a body sent at `timestamp` (unix seconds)."""
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={digest}"


def verify_signature(
    secret: bytes, timestamp: str | None, signed: str | None, body: bytes, *, now: float | None = None,
    tolerance_s: int = SIGNATURE_TOLERANCE_S,
) -> bool:  # fmt: skip
    """A receiver's check: the signature is ours and the timestamp recent (a replay is refused)."""
    if timestamp is None or signed is None or not timestamp.isdigit():
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > tolerance_s:
        return False
    return hmac.compare_digest(signature(secret, int(timestamp), body), signed)


def encode(payload: object) -> bytes:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


@dataclass(frozen=True)
class Attempt:
    """How one delivery went: delivered, or the error and whether to try again."""

    delivered: bool
    error: str | None = None
    retryable: bool = True
    retry_after_s: float | None = None


def _attempt_of(response: httpx.Response) -> Attempt:
    if 200 <= response.status_code < 300:
        return Attempt(True)
    retryable = response.status_code in RETRYABLE or response.status_code >= 500
    return Attempt(False, f"HTTP {response.status_code}", retryable, _retry_after(response.headers.get("retry-after")))


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


class AlertDelivery:
    """The outbox drainer: a daemon thread, woken when an alert is queued, polling for retries,
    that claims due rows for free senders (`MAX_IN_FLIGHT` threads) and goes on claiming while they send."""

    def __init__(self, store: LeadStore, config: AlertConfig, client: httpx.Client | None = None) -> None:
        self.store = store
        self.config = config
        self.client = client or httpx.Client(
            timeout=REQUEST_TIMEOUT_S, follow_redirects=False, limits=httpx.Limits(max_connections=MAX_IN_FLIGHT)
        )
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._senders = ThreadPoolExecutor(MAX_IN_FLIGHT, thread_name_prefix="leadscore-alert-send")
        self._in_flight = 0
        self._in_flight_lock = threading.Lock()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="leadscore-alert-delivery", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """An alert was queued: deliver now rather than at the next poll."""
        self._wake.set()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        # Sends under way finish (within their timeout); claimed rows not settled are delivered when their lease ends.
        self._senders.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._in_flight_lock:
                free = MAX_IN_FLIGHT - self._in_flight
            claimed = False
            if free > 0:
                try:
                    claimed = self._dispatch(self.store.claim_due(free, LEASE))
                except LeadStoreError as exc:
                    logger.error("alert delivery: %s", exc)
            if claimed:
                continue  # more may be due
            # A sender that finishes wakes this too: with every sender busy, wait for one.
            self._wake.wait(self._idle_wait() if free > 0 else IDLE_POLL_S)
            self._wake.clear()

    def _dispatch(self, items: Sequence[OutboxItem]) -> bool:
        """Hand each delivery of these claimed rows to a sender; True when there was any."""
        for delivery in _deliveries(items):
            with self._in_flight_lock:
                self._in_flight += 1
            self._senders.submit(self._deliver, delivery)
        return bool(items)

    def _deliver(self, items: Sequence[OutboxItem]) -> None:
        try:
            self._settle(items, self._attempt(items))
        except LeadStoreError as exc:
            logger.error("alert delivery: %s (delivered again when the lease ends)", exc)
        except Exception:  # a sender's thread would drop it unseen; the row is delivered again when its lease ends
            logger.exception("alert delivery to %s failed unexpectedly", _shown_target(items[0].target))
        finally:
            with self._in_flight_lock:
                self._in_flight -= 1
            self._wake.set()

    def _idle_wait(self) -> float:
        try:
            due = self.store.next_due()
        except LeadStoreError:
            return IDLE_POLL_S
        if due is None:
            return IDLE_POLL_S
        return min(IDLE_POLL_S, max(0.0, (due - datetime.now(UTC)).total_seconds()))

    def drain_once(self) -> bool:
        """Deliver what is due now, `MAX_IN_FLIGHT` at a time, and wait for it; True when something was claimed.

        How the attempts went is recorded together, in one transaction, when all are made (a
        crash before delivers them again when their lease ends).
        """
        items = self.store.claim_due(CLAIM_LIMIT, LEASE)
        if not items:
            return False
        deliveries = _deliveries(items)
        self._settle_all(list(zip(deliveries, self._senders.map(self._attempt, deliveries), strict=True)))
        return True

    def _attempt(self, items: Sequence[OutboxItem]) -> Attempt:
        """One delivery: a webhook's row, or a batch of HubSpot rows (`_deliveries`)."""
        target = items[0].target
        if target == HUBSPOT_TARGET:
            return self._send_hubspot(items)
        if target.startswith(WEBHOOK_PREFIX):
            return self._send_webhook(items[0])
        return Attempt(False, f"unknown target {target!r}", retryable=False)

    def _send_webhook(self, item: OutboxItem) -> Attempt:
        body = encode(item.payload)
        stamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: str(stamp),
            SIGNATURE_HEADER: signature(self.config.secret, stamp, body),
            ALERT_ID_HEADER: item.alert_id,
            "User-Agent": "leadscore-alerts",
        }
        try:
            return _attempt_of(self.client.post(item.target[len(WEBHOOK_PREFIX) :], content=body, headers=headers))
        except httpx.HTTPError as exc:
            return Attempt(False, f"{exc.__class__.__name__}: {exc}")

    def _send_hubspot(self, items: Sequence[OutboxItem]) -> Attempt:
        inputs = []
        for item in items:
            properties = {name: _hubspot_value(item.payload.get(key)) for name, key in HUBSPOT_PROPERTIES.items()}
            entry: dict[str, object] = {"id": item.lead_id, "properties": properties}
            if self.config.hubspot_id_property is not None:
                entry["idProperty"] = self.config.hubspot_id_property
            inputs.append(entry)
        headers = {"Authorization": f"Bearer {self.config.hubspot_token}", "Content-Type": "application/json"}
        try:
            response = self.client.post(
                self.config.hubspot_api_url + HUBSPOT_BATCH_UPDATE, content=encode({"inputs": inputs}), headers=headers
            )
        except httpx.HTTPError as exc:
            return Attempt(False, f"{exc.__class__.__name__}: {exc}")
        return _attempt_of(response)

    def _settle(self, items: Sequence[OutboxItem], attempt: Attempt) -> None:
        self._settle_all([(items, attempt)])

    def _settle_all(self, outcomes: Sequence[tuple[Sequence[OutboxItem], Attempt]]) -> None:
        """Record attempts in the outbox, in one transaction: delivered, due again after a backoff, or dead."""
        if not outcomes:
            return
        delivered: list[int] = []
        failed: list[tuple[list[int], str, datetime | None]] = []
        for items, attempt in outcomes:
            ids = [i.id for i in items]
            if attempt.delivered:
                delivered.extend(ids)
                continue
            error = attempt.error or "failed"
            if not attempt.retryable:
                failed.append((ids, error, None))
                logger.error(
                    "alert delivery to %s refused (%s): not retried; the outbox keeps %d alert(s) as dead",
                    _shown_target(items[0].target), error, len(ids),
                )  # fmt: skip
                continue
            attempts = min(i.attempts for i in items)
            # Up to 20 % more, so that receivers that came back are not hit by every retry at once.
            wait = min(self.config.retry_s * 2**attempts * random.uniform(1.0, 1.2), self.config.retry_max_s)
            if attempt.retry_after_s is not None:
                wait = max(wait, min(attempt.retry_after_s, self.config.retry_max_s))
            failed.append((ids, error, datetime.now(UTC) + timedelta(seconds=wait)))
            logger.warning(
                "alert delivery to %s failed (%s), attempt %d: retrying in %.1f s", _shown_target(items[0].target), error,
                attempts + 1, wait,
            )  # fmt: skip
        self.store.settle(delivered, failed)


def _hubspot_value(value: object) -> str:
    # HubSpot takes property values as text; an empty text clears a property.
    return "" if value is None else str(value)


def _deliveries(items: Sequence[OutboxItem]) -> list[list[OutboxItem]]:
    """Claimed rows as deliveries: each webhook's row alone, HubSpot's rows in batches (`_hubspot_batches`)."""
    return [[i] for i in items if i.target != HUBSPOT_TARGET] + _hubspot_batches([i for i in items if i.target == HUBSPOT_TARGET])


def _hubspot_batches(items: Sequence[OutboxItem]) -> list[list[OutboxItem]]:
    """Batches of at most `HUBSPOT_BATCH_LIMIT` contacts, each contact once per batch (HubSpot refuses duplicates)."""
    batches: list[list[OutboxItem]] = []
    for item in items:
        for batch in batches:
            if len(batch) < HUBSPOT_BATCH_LIMIT and all(other.lead_id != item.lead_id for other in batch):
                batch.append(item)
                break
        else:
            batches.append([item])
    return batches


def _shown_target(target: str) -> str:
    # A webhook URL may carry a token in its query: the log shows scheme, host and path only.
    if target.startswith(WEBHOOK_PREFIX):
        url = httpx.URL(target[len(WEBHOOK_PREFIX) :])
        return f"webhook {url.scheme}://{url.host}{':' + str(url.port) if url.port else ''}{url.path}"
    return target
