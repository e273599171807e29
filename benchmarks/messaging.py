"""Messaging: emails delivered per second through stepsaga against a plain aiosmtplib
program, in the same run, to the same loopback SMTP server.

- ``email``: ``--messages`` emails rendered from the same Jinja2 template (text and
  HTML) to an aiosmtpd server in a process of its own. stepsaga: a worker node on a
  SQLite store (every message a durable work: created, checked, delivered, each step
  committed) with a channel of ``--senders`` SMTP senders, one connection each, the
  messages created while the node runs; the time runs from the first creation to the
  last completion. The plain program: ``--senders`` tasks, each with one aiosmtplib
  connection, rendering and sending its share. ``ratio_vs_plain``: stepsaga's rate
  over the plain one's (the goal: at least 0.5).
- ``signup``: ``--signups`` sign-ups end to end through the users pack (the
  password hashed with argon2id at the production cost, the ``users.sign_up`` work
  created, its confirmation mailed to another aiosmtpd process, which hands each
  mail's token back, the token confirmed, the work completed), ``--signup-concurrency``
  at once, against this machine hashing the same number of passwords with the same
  settings at the same concurrency in the same run. ``ratio_vs_argon2``: sign-ups per
  second over hashes per second (the goal: at least 0.8: the hash, not the engine,
  is the limit).

Each of ``--rounds`` (3) runs the plain program then stepsaga; the medians are
compared (this machine's load varies from one second to the next). ``--quick``: 300
messages and 40 sign-ups a round (well under five minutes here).

    python benchmarks/messaging.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from email import charset, policy
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
GOAL_RATIO = 0.5
SIGNUP_GOAL = 0.8
TEMPLATE = {"subject": "Your order {{ number }}",
            "text": "Hello {{ name }},\n\nyour order {{ number }} is on its way.\n",
            "html": "<p>Hello <b>{{ name }}</b>, your order {{ number }} is on its way.</p>"}

SERVER = """
import sys, threading
from aiosmtpd.controller import Controller

class Count:
    def __init__(self):
        self.n = 0
        self.lock = threading.Lock()
    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.n += 1
        return "250 OK"

port = int(sys.argv[1])
handler = Count()
controller = Controller(handler, hostname="127.0.0.1", port=port)
controller.start()
print("ready", flush=True)
for line in sys.stdin:
    print(handler.n, flush=True)
controller.stop()
"""


SIGNUP_SERVER = """
import re, sys
from email import message_from_bytes, policy
from aiosmtpd.controller import Controller

TOKEN = re.compile(r"token: (ss1[.][A-Za-z0-9_.-]+)")

class Tokens:
    async def handle_DATA(self, server, session, envelope):
        mail = message_from_bytes(envelope.content, policy=policy.default)
        found = TOKEN.search(mail.get_body(("plain",)).get_content())
        print(envelope.rcpt_tos[0], found.group(1) if found else "-", flush=True)
        return "250 OK"

controller = Controller(Tokens(), hostname="127.0.0.1", port=int(sys.argv[1]))
controller.start()
print("ready", flush=True)
sys.stdin.read()
controller.stop()
"""


class SmtpServer:
    """aiosmtpd in a process of its own, counting what it accepted."""

    def __init__(self, script: str = SERVER) -> None:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.process = subprocess.Popen([sys.executable, "-c", script, str(self.port)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True)
        assert self.process.stdout is not None and self.process.stdin is not None
        if self.process.stdout.readline().strip() != "ready":
            raise SystemExit("the SMTP server did not start")

    def accepted(self) -> int:
        assert self.process.stdout is not None and self.process.stdin is not None
        self.process.stdin.write("?\n")
        self.process.stdin.flush()
        return int(self.process.stdout.readline())

    def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(30)


def section(port: int, senders: int, connections: int = 1) -> dict[str, Any]:
    return {"templates": {"order": TEMPLATE}, "attempts": 3, "backoff": 0.05,
            "senders": {f"mail{i}": {"kind": "smtp", "port": port, "connections": connections,
                                     "from": f"shop{i}@example.com"}
                        for i in range(senders)},
            "channels": {"email": {"kind": "email",
                                   "senders": [f"mail{i}" for i in range(senders)]}}}


async def plain(port: int, senders: int, messages: int) -> float:
    """``senders`` connections, each sending its share in turn; the seconds it took.

    Each message is built as the smtp provider builds it (the same MIME parts, the same
    encodings: the same bytes on the wire but for the boundary) and sent with
    ``sendmail``, as the provider sends it."""
    import aiosmtplib
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)
    html_env = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=True)
    subject, text = env.from_string(TEMPLATE["subject"]), env.from_string(TEMPLATE["text"])
    html = html_env.from_string(TEMPLATE["html"])
    smtp = policy.compat32.clone(linesep="\r\n")
    utf8 = charset.Charset("utf-8")
    utf8.body_encoding = charset.QP

    def part(body: str, subtype: str) -> MIMENonMultipart:
        found = MIMENonMultipart("text", subtype, policy=smtp, charset="utf-8")
        found.set_payload(body, utf8)
        return found

    async def one_sender(i: int) -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await client.connect()
        sender = f"shop{i}@example.com"
        for n in range(i, messages, senders):
            context = {"name": f"user{n}", "number": n}
            to = f"user{n}@example.com"
            mail = MIMEMultipart("alternative", policy=smtp)
            mail.attach(part(text.render(context), "plain"))
            mail.attach(part(html.render(context), "html"))
            mail["From"], mail["To"] = sender, to
            mail["Subject"] = subject.render(context)
            mail["Message-ID"] = f"<plain-{n}@example.com>"
            await client.sendmail(sender, [to], mail.as_bytes(policy=smtp))
        client.close()

    began = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for i in range(senders):
            tg.start_soon(one_sender, i)
    return time.perf_counter() - began


async def through_stepsaga(port: int, senders: int, messages: int, concurrency: int,
                           store_path: Path) -> dict[str, Any]:
    import sqlalchemy as sa

    from engine import Runtime
    from engine.store import SqlStore
    from engine.store.schema import works
    from workers.actions.messaging import messaging_app, parse, send_message
    from workers.node import WorkerSpec

    app = messaging_app(config=parse(section(port, senders)))
    async with SqlStore.open(f"sqlite+aiosqlite:///{store_path}") as store:
        node = app.node(store, [WorkerSpec(name="main", concurrency=concurrency)],
                        node_id="bench", poll_interval=0.02)
        ids: list[str] = []
        async with anyio.create_task_group() as tg:
            await tg.start(node.run)
            began = time.perf_counter()
            async with Runtime(app.sagas, store=store) as rt:
                async def create(first: int) -> None:  # as concurrent requests would
                    for n in range(first, messages, concurrency):
                        ids.append(await send_message(
                            rt, "email", "order", f"user{n}@example.com",
                            {"name": f"user{n}", "number": n}))

                async with anyio.create_task_group() as creators:
                    for first in range(min(concurrency, messages)):
                        creators.start_soon(create, first)
            created = time.perf_counter() - began
            ended = sa.select(sa.func.count()).select_from(works).where(
                works.c.saga == "messaging.send",
                works.c.status.in_(("completed", "failed", "cancelled")))
            for _ in range(600 * 50):
                async with store.reader.connect() as conn:
                    if (await conn.execute(ended)).scalar_one() >= messages:
                        break
                await anyio.sleep(0.02)
            seconds = time.perf_counter() - began
            await node.drain(5.0)
        statuses: dict[str, int] = {}
        for work_id in ids:
            status = ((await store.work(work_id)) or {}).get("status", "missing")
            statuses[status] = statuses.get(status, 0) + 1
    return {"seconds": seconds, "created_seconds": created, "statuses": statuses}


SIGNUP_PASSWORD = "a long enough password"


def signup_section(port: int) -> dict[str, Any]:
    return {"attempts": 3, "backoff": 0.05,
            "templates": {"users_confirm": {"subject": "Confirm your account",
                                            "text": "Confirm with the token: {{ token }}"},
                          "users_reset": {"subject": "Reset your password",
                                          "text": "Reset with {{ link }}"}},
            "senders": {"mail": {"kind": "smtp", "port": port, "connections": 4,
                                 "from": "accounts@example.com"}},
            "channels": {"email": {"kind": "email", "senders": ["mail"]}}}


def hashes(count: int, concurrency: int) -> float:
    """``count`` argon2id hashes at the users pack's production cost, ``concurrency``
    at once in threads (as the pack computes them); the seconds it took."""
    from workers.actions.users import Passwords, parse

    passwords = Passwords(parse({}))

    async def run() -> float:
        began = time.perf_counter()

        async def share(first: int) -> None:
            for _ in range(first, count, concurrency):
                await passwords.hash(SIGNUP_PASSWORD)

        async with anyio.create_task_group() as tg:
            for first in range(min(concurrency, count)):
                tg.start_soon(share, first)
        return time.perf_counter() - began

    return anyio.run(run)


class Tokens:
    """The tokens the sign-ups' SMTP server hands back, by recipient (one reader of its
    lines for every round)."""

    def __init__(self, server: SmtpServer) -> None:
        import threading

        self.server = server
        self.found: dict[str, str] = {}
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:  # the server's lines: "<to> <token>"
        assert self.server.process.stdout is not None
        for line in self.server.process.stdout:
            to, _, token = line.strip().partition(" ")
            with self.lock:
                self.found[to] = token

    def get(self, to: str) -> str | None:
        with self.lock:
            return self.found.get(to)


async def signups(tokens: Tokens, count: int, concurrency: int, store_path: Path,
                  prefix: str) -> dict[str, Any]:
    """``count`` sign-ups end to end, ``concurrency`` at once: hashed, created, mailed,
    confirmed with the mailed token, completed; the seconds it took."""
    import sqlalchemy as sa

    from engine import Runtime
    from engine.secrets import Secrets
    from engine.store import SqlStore
    from engine.store.schema import works
    from workers.actions.messaging import MessagingPack
    from workers.actions.messaging import parse as messaging_parse
    from workers.actions.users import UsersPack, confirm_sign_up, parse, sign_up, users_app
    from workers.node import WorkerSpec

    pack = UsersPack(parse({"confirm_timeout": 3600}),
                     MessagingPack(messaging_parse(signup_section(tokens.server.port))))
    app = users_app(pack=pack)
    key = Secrets(os.urandom(32))
    async with SqlStore.open(f"sqlite+aiosqlite:///{store_path}") as store:
        node = app.node(store, [WorkerSpec(name="main", concurrency=4 * concurrency)],
                        node_id="bench", poll_interval=0.05, park_after=0.5, secrets=key)
        async with anyio.create_task_group() as tg:
            await tg.start(node.run)
            async with Runtime(app.sagas, store=store, secrets=key) as rt:
                began = time.perf_counter()

                async def share(first: int) -> None:  # as concurrent people would
                    for n in range(first, count, concurrency):
                        email = f"{prefix}user{n}@example.com"
                        await sign_up(rt, pack, email, SIGNUP_PASSWORD)
                        for _ in range(120 * 200):
                            token = tokens.get(email)
                            if token:
                                break
                            await anyio.sleep(0.02)
                        else:
                            raise SystemExit(f"no confirmation mail to {email}")
                        await confirm_sign_up(store, token)

                async with anyio.create_task_group() as people:
                    for first in range(min(concurrency, count)):
                        people.start_soon(share, first)
                done = sa.select(sa.func.count()).select_from(works).where(
                    works.c.saga == "users.sign_up", works.c.status == "completed")
                for _ in range(600 * 50):
                    async with store.reader.connect() as conn:
                        if (await conn.execute(done)).scalar_one() >= count:
                            break
                    await anyio.sleep(0.02)
                seconds = time.perf_counter() - began
            await node.drain(5.0)
        async with store.reader.connect() as conn:
            statuses = dict((await conn.execute(
                sa.select(works.c.status, sa.func.count()).where(
                    works.c.saga == "users.sign_up").group_by(works.c.status))).all())
    return {"seconds": seconds, "statuses": statuses}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--senders", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32,
                        help="works the stepsaga node runs at once")
    parser.add_argument("--rounds", type=int, default=3,
                        help="plain and stepsaga runs, alternated; the medians compared")
    parser.add_argument("--signups", type=int, default=120)
    parser.add_argument("--signup-concurrency", type=int, default=8,
                        help="sign-ups (and argon2 hashes) at once")
    parser.add_argument("--quick", action="store_true", help="300 messages, 40 sign-ups")
    args = parser.parse_args()
    if args.quick:
        args.messages = 300
        args.signups = 40
    server = SmtpServer()
    work = Path(tempfile.mkdtemp(prefix="messaging-bench-"))
    plain_rates: list[float] = []
    our_rates: list[float] = []
    created: list[float] = []
    try:
        for round_ in range(args.rounds):
            before = server.accepted()
            plain_seconds = anyio.run(plain, server.port, args.senders, args.messages)
            after_plain = server.accepted() - before
            ours = anyio.run(through_stepsaga, server.port, args.senders, args.messages,
                             args.concurrency, work / f"store{round_}.sqlite")
            after_ours = server.accepted() - before - after_plain
            if after_plain != args.messages or after_ours != args.messages or \
                    ours["statuses"] != {"completed": args.messages}:
                raise SystemExit(f"not every message arrived: plain {after_plain}, "
                                 f"stepsaga {after_ours}, works {ours['statuses']}")
            plain_rates.append(args.messages / plain_seconds)
            our_rates.append(args.messages / ours["seconds"])
            created.append(ours["created_seconds"])
        hash_rates: list[float] = []
        signup_rates: list[float] = []
        tokens_server = SmtpServer(SIGNUP_SERVER)
        tokens = Tokens(tokens_server)
        try:
            for round_ in range(args.rounds):
                hash_rates.append(args.signups / hashes(args.signups,
                                                        args.signup_concurrency))
                found = anyio.run(signups, tokens, args.signups, args.signup_concurrency,
                                  work / f"users{round_}.sqlite", f"r{round_}")
                if found["statuses"] != {"completed": args.signups}:
                    raise SystemExit(f"not every sign-up completed: {found['statuses']}")
                signup_rates.append(args.signups / found["seconds"])
        finally:
            tokens_server.stop()
    finally:
        server.stop()
        for path in work.iterdir():
            path.unlink()
        work.rmdir()
    hash_rate, signup_rate = statistics.median(hash_rates), statistics.median(signup_rates)
    plain_rate, our_rate = statistics.median(plain_rates), statistics.median(our_rates)
    print(json.dumps({
        "parameters": {"messages": args.messages, "senders": args.senders,
                       "concurrency": args.concurrency, "rounds": args.rounds,
                       "quick": args.quick, "store": "sqlite", "cpus": os.cpu_count()},
        "email": {"plain_per_second": round(plain_rate, 1),
                  "stepsaga_per_second": round(our_rate, 1),
                  "plain_rounds": [round(r, 1) for r in plain_rates],
                  "stepsaga_rounds": [round(r, 1) for r in our_rates],
                  "stepsaga_created_seconds": round(statistics.median(created), 3),
                  "ratio_vs_plain": round(our_rate / plain_rate, 3),
                  "goal_ratio": GOAL_RATIO,
                  "goal_met": our_rate / plain_rate >= GOAL_RATIO},
        "signup": {"argon2_per_second": round(hash_rate, 2),
                   "stepsaga_per_second": round(signup_rate, 2),
                   "argon2_rounds": [round(r, 2) for r in hash_rates],
                   "stepsaga_rounds": [round(r, 2) for r in signup_rates],
                   "signups": args.signups, "concurrency": args.signup_concurrency,
                   "ratio_vs_argon2": round(signup_rate / hash_rate, 3),
                   "goal_ratio": SIGNUP_GOAL,
                   "goal_met": signup_rate / hash_rate >= SIGNUP_GOAL},
    }))


if __name__ == "__main__":
    main()
