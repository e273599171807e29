"""Real protocol servers on loopback for the messaging tests: an SMTP server (aiosmtpd)
whose mail the tests read, and one HTTP server speaking both an SMS provider's API in
the shape of Twilio's Messages resource and a bot API in the shape of Telegram's
``sendMessage``, each answering with the provider's status codes and error bodies, and
failing on demand (per account or bot token)."""

from __future__ import annotations

import base64
import json
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Mail:
    mail_from: str
    to: list[str]
    message: EmailMessage
    at: float
    peer: Any = None  # the client's (host, port): one per connection


class MailServer:
    """aiosmtpd on a free loopback port; ``mails`` as received; ``refuse[from] =
    "451 4.3.0 try later"`` answers DATA from that sender with that reply."""

    def __init__(self) -> None:
        self.mails: list[Mail] = []
        self.refuse: dict[str, str] = {}
        self.lock = threading.Lock()
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        refusal = self.refuse.get(envelope.mail_from)
        if refusal:
            return refusal
        parsed = message_from_bytes(envelope.content, policy=policy.default)
        with self.lock:
            self.mails.append(Mail(mail_from=envelope.mail_from, to=list(envelope.rcpt_tos),
                                   message=parsed, at=time.monotonic(),  # type: ignore[arg-type]
                                   peer=session.peer))
        return "250 Message accepted for delivery"

    def start(self) -> MailServer:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()


_PHONE = re.compile(r"^\+[1-9][0-9]{6,14}$")


@dataclass
class Providers:
    """What the HTTP server knows and was sent: Twilio accounts (sid -> auth token),
    bot tokens, the messages each took, and the status to fail with by sid or token."""

    accounts: dict[str, str] = field(default_factory=dict)
    bots: set[str] = field(default_factory=set)
    sms: list[dict[str, Any]] = field(default_factory=list)
    chats: list[dict[str, Any]] = field(default_factory=list)
    fail: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        state = self.server.state
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        twilio = re.match(r"^/2010-04-01/Accounts/([A-Za-z0-9]+)/Messages\.json$", self.path)
        bot = re.match(r"^/bot([^/]+)/sendMessage$", self.path)
        if twilio:
            self._twilio(state, twilio.group(1), body)
        elif bot:
            self._telegram(state, bot.group(1), body)
        else:
            self._answer(404, {"code": 20404, "message": "The requested resource was not "
                               "found", "status": 404})

    def _twilio(self, state: Providers, sid: str, body: bytes) -> None:
        auth = self.headers.get("Authorization", "")
        given = base64.b64decode(auth[6:]).decode() if auth.startswith("Basic ") else ""
        if sid not in state.accounts or given != f"{sid}:{state.accounts[sid]}":
            self._answer(401, {"code": 20003, "message": "Authenticate", "status": 401})
            return
        if sid in state.fail:
            status = state.fail[sid]
            self._answer(status, {"code": 20500 if status >= 500 else 20429,
                                  "message": "failing on demand", "status": status})
            return
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        if not _PHONE.match(form.get("To", "")):
            self._answer(400, {"code": 21211, "message": f"The 'To' number "
                               f"{form.get('To')} is not a valid phone number.",
                               "status": 400})
            return
        message = {"sid": "SM" + uuid.uuid4().hex, "account_sid": sid, "to": form["To"],
                   "from": form.get("From"), "body": form.get("Body", ""),
                   "status": "queued", "at": time.monotonic()}
        with state.lock:
            state.sms.append(message)
        self._answer(201, {k: v for k, v in message.items() if k != "at"})

    def _telegram(self, state: Providers, token: str, body: bytes) -> None:
        if token not in state.bots:
            self._answer(401, {"ok": False, "error_code": 401,
                               "description": "Unauthorized"})
            return
        if token in state.fail:
            status = state.fail[token]
            self._answer(status, {"ok": False, "error_code": status,
                                  "description": "failing on demand"})
            return
        data = json.loads(body or b"{}")
        if not data.get("text"):
            self._answer(400, {"ok": False, "error_code": 400,
                               "description": "Bad Request: message text is empty"})
            return
        with state.lock:
            message = {"message_id": len(state.chats) + 1, "token": token,
                       "chat_id": data.get("chat_id"), "text": data["text"],
                       "at": time.monotonic()}
            state.chats.append(message)
        self._answer(200, {"ok": True, "result": {
            "message_id": message["message_id"], "chat": {"id": message["chat_id"]},
            "text": message["text"]}})


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: Providers) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state


class ProviderServer:
    """The SMS and bot APIs on one loopback HTTP server, in a thread; ``url`` is its
    base URL (the senders' ``url`` setting)."""

    def __init__(self) -> None:
        self.state = Providers()
        self.server = _Server(self.state)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> ProviderServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)
