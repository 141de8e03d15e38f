"""A webhook receiver on loopback: records every request, answers what it is told to.

tests/test_alerts.py and `make bench-service` (benchmarks/events.py) point the service's alerts
at it. `answer(key, n)` gives the status of the n-th request (from 0) for a key: the alert id
of a webhook (`X-Leadscore-Alert-Id`), the body of any other request; `down` answers 503 to all;
`delay_s` holds every answer that long (a slow receiver; requests are still taken side by side).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from serving.alerts import ALERT_ID_HEADER


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    at: float  # time.time() on arrival


def always_ok(key: str, n: int) -> int:
    return 200


class Receiver:
    """A threaded HTTP server on 127.0.0.1 (a free port) that records each POST."""

    def __init__(self, answer: Callable[[str, int], int] = always_ok) -> None:
        self.answer = answer
        self.down = False
        self.delay_s = 0.0
        self.received: list[Received] = []
        self.seen: Counter[str] = Counter()
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                arrived = time.time()
                key = self.headers.get(ALERT_ID_HEADER) or body.decode(errors="replace")
                with receiver.lock:
                    status = 503 if receiver.down else receiver.answer(key, receiver.seen[key])
                    receiver.seen[key] += 1
                    receiver.received.append(Received(self.path, dict(self.headers), body, status, arrived))
                time.sleep(receiver.delay_s)
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: object) -> None:
                pass  # quiet: the records are the log

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, name="alert-receiver", daemon=True).start()

    def delivered(self, path: str = "/hook") -> list[Received]:
        """The requests to `path` answered 200."""
        with self.lock:
            return [r for r in self.received if r.path == path and r.status == 200]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
