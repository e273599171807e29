"""A small payment provider on loopback speaking the shape of Stripe's PaymentIntents
and Refunds: ``POST /v1/payment_intents`` and ``POST /v1/refunds``, form-encoded,
``Authorization: Bearer <key>``, ``Idempotency-Key`` honoured (the first answer
replayed for a repeat with ``Idempotent-Replayed: true``; the same key with other
parameters is a 400 ``idempotency_error``), errors as ``{"error": {"type", "code",
"message"}}`` with Stripe's status codes. Payment methods as Stripe's test ones:
``pm_card_visa`` succeeds, ``pm_card_chargeDeclined`` is declined (402).

Failures on demand: :meth:`fail` answers the next requests to a path with a status
before they are executed (nothing charged, nothing remembered for their key, as a
busy or broken provider does); :meth:`hold` lets charges be made and then keeps their
answer until :meth:`release` (a client killed meanwhile never hears it).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

KEY = "sk_test_orders"


@dataclass
class Seen:
    path: str
    key: str | None
    form: dict[str, str]
    status: int
    replayed: bool


@dataclass
class Provider:
    """The provider's state: what it charged and refunded, and every request it saw."""

    intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    url: str = ""
    _answers: dict[str, tuple[str, dict[str, str], int, dict[str, Any]]] = field(
        default_factory=dict)
    _failing: dict[str, list[int]] = field(default_factory=dict)
    _always: dict[str, int] = field(default_factory=dict)
    _hold: threading.Event | None = None
    held: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, path: str, status: int, times: int = 1) -> None:
        """The next ``times`` requests to ``path`` answered ``status``, not executed."""
        with self._lock:
            self._failing.setdefault(path, []).extend([status] * times)

    def fail_always(self, path: str, status: int | None) -> None:
        """Every request to ``path`` answered ``status`` until called with None."""
        with self._lock:
            if status is None:
                self._always.pop(path, None)
            else:
                self._always[path] = status

    def hold(self) -> None:
        """Charges are made but their answers kept until :meth:`release`."""
        self._hold = threading.Event()
        self.held.clear()

    def release(self) -> None:
        if self._hold is not None:
            self._hold.set()
            self._hold = None

    def keys_of(self, path: str) -> list[str | None]:
        return [s.key for s in self.seen if s.path == path]

    def refunded(self, intent: str) -> int:
        return sum(r["amount"] for r in self.refunds.values()
                   if r["payment_intent"] == intent)

    # ------------------------------------------------------------ the API

    def handle(self, path: str, key: str | None, auth: str | None, form: dict[str, str]
               ) -> tuple[int, dict[str, Any], bool]:
        with self._lock:
            if auth != f"Bearer {KEY}":
                return 401, _error("invalid_request_error", "api_key_invalid",
                                   "Invalid API Key provided"), False
            injected = self._always.get(path)
            if injected is None and self._failing.get(path):
                injected = self._failing[path].pop(0)
            if injected is not None:
                return injected, _error("api_error", "injected",
                                        f"asked to fail with {injected}"), False
            if key is not None and key in self._answers:
                was_path, was_form, status, body = self._answers[key]
                if (was_path, was_form) != (path, form):
                    return 400, _error("idempotency_error", "idempotency_key_in_use",
                                       "Keys for idempotent requests can only be used "
                                       "with the same parameters they were first used "
                                       "with"), False
                return status, body, True
            if path == "/v1/payment_intents":
                status, body = self._charge(form)
            elif path == "/v1/refunds":
                status, body = self._refund(form)
            else:
                return 404, _error("invalid_request_error", "resource_missing",
                                   f"Unrecognized request URL (POST: {path})"), False
            if key is not None and status < 500:
                self._answers[key] = (path, form, status, body)
            return status, body, False

    def _charge(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        for name in ("amount", "currency", "payment_method"):
            if not form.get(name):
                return 400, _error("invalid_request_error", "parameter_missing",
                                   f"Missing required param: {name}.", param=name)
        if not form["amount"].isdigit() or int(form["amount"]) < 1:
            return 400, _error("invalid_request_error", "parameter_invalid_integer",
                               "Invalid integer: amount", param="amount")
        intent_id = f"pi_{len(self.intents) + 1:06d}"
        declined = form["payment_method"] == "pm_card_chargeDeclined"
        intent = {"id": intent_id, "object": "payment_intent", "amount": int(form["amount"]),
                  "currency": form["currency"], "payment_method": form["payment_method"],
                  "status": "requires_payment_method" if declined else "succeeded",
                  "metadata": {k[9:-1]: v for k, v in form.items()
                               if k.startswith("metadata[")}}
        self.intents[intent_id] = intent
        if declined:
            return 402, _error("card_error", "card_declined", "Your card was declined.",
                               payment_intent=intent)
        return 200, intent

    def _refund(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        intent = self.intents.get(form.get("payment_intent", ""))
        if intent is None or intent["status"] != "succeeded":
            return 400, _error("invalid_request_error", "resource_missing",
                               f"No such payment_intent: '{form.get('payment_intent')}'",
                               param="payment_intent")
        left = intent["amount"] - self.refunded(intent["id"])
        amount = int(form.get("amount") or left)
        if amount > left:
            return 400, _error("invalid_request_error", "amount_too_large",
                               f"Refund amount ({amount}) is greater than unrefunded "
                               f"amount on charge ({left})", param="amount")
        refund_id = f"re_{len(self.refunds) + 1:06d}"
        refund = {"id": refund_id, "object": "refund", "amount": amount,
                  "payment_intent": intent["id"], "status": "succeeded",
                  "currency": intent["currency"]}
        self.refunds[refund_id] = refund
        return 200, refund


def _error(kind: str, code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"type": kind, "code": code, "message": message, **extra}}


class _Handler(BaseHTTPRequestHandler):
    provider: Provider

    def do_POST(self) -> None:  # http.server calls it by this name
        size = int(self.headers.get("Content-Length") or 0)
        form = dict(parse_qsl(self.rfile.read(size).decode()))
        key = self.headers.get("Idempotency-Key")
        status, body, replayed = self.provider.handle(
            self.path, key, self.headers.get("Authorization"), form)
        self.provider.seen.append(Seen(self.path, key, form, status, replayed))
        hold = self.provider._hold
        if hold is not None and self.path == "/v1/payment_intents" and not replayed:
            self.provider.held.set()
            hold.wait(30)
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if replayed:
                self.send_header("Idempotent-Replayed", "true")
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client is gone (killed while its answer was held)
            pass

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serving() -> Iterator[Provider]:
    """A provider on 127.0.0.1 and a free port, in a thread; its ``url`` set."""
    provider = Provider()
    handler = type("Handler", (_Handler,), {"provider": provider})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    provider.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield provider
    finally:
        provider.release()
        server.shutdown()
        server.server_close()
