"""The providers a sender speaks to, behind one interface: a new provider is one
subclass of :class:`Provider` added to :data:`PROVIDERS`.

A provider class names its sender ``kind`` (what ``[messaging.senders.NAME] kind``
says), the ``channel`` kind it serves, its settings with their defaults (the type of
each default is the type expected; those in ``required`` must be given) and
``send``, which hands one rendered message to the provider and returns the
provider's id for it, or raises :class:`SendError` (retryable or not).

- ``smtp`` (email): SMTP through ``aiosmtplib``, plain text and, when the template
  has one, an HTML alternative; the Message-ID is made from the work's id, the same
  on every attempt, so a receiver can tell a repeat. A sender opens up to
  ``connections`` connections (one message at a time on each) and keeps one open
  after a message only for a message waiting for it, or coming within ``linger``
  seconds (so an idle sender holds no connection).
- ``twilio`` (sms): the shape of Twilio's Messages resource: a form POST to
  ``{url}/2010-04-01/Accounts/{account_sid}/Messages.json`` with Basic auth,
  ``To``, ``From`` and ``Body``; 201 with the message's ``sid``.
- ``telegram`` (chat): the Bot API's ``{url}/bot{token}/sendMessage`` with JSON
  ``chat_id`` and ``text``; ``{"ok": true, "result": {"message_id": ...}}``.

A 429, a 5xx or no answer at all is retryable; another refusal is not.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email import charset, policy
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from email.utils import formataddr, getaddresses, make_msgid
from typing import Any, ClassVar

import aiosmtplib
import anyio
import httpx

from .errors import MessageInputError, MessagingConfigError, SendError

__all__ = ["ADDRESSES", "FROM_EXPECTED", "PROVIDERS", "Provider", "Rendered", "Smtp",
           "Telegram", "Twilio", "check_address", "email_sender"]

_EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
                    r"[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")
_PHONE = re.compile(r"^\+[1-9][0-9]{6,14}$")  # E.164
_CHAT = re.compile(r"^(-?[0-9]{1,20}|@[A-Za-z][A-Za-z0-9_]{4,31})$")  # an id or @channel

ADDRESSES: dict[str, tuple[re.Pattern[str], str]] = {
    "email": (_EMAIL, "an e-mail address such as ada@example.com"),
    "sms": (_PHONE, "a phone number in E.164 form such as +441632960961"),
    "chat": (_CHAT, "a chat id (digits, negative for a group) or @channelname"),
}
"""What a recipient of each channel kind looks like, and how an error describes it."""


def check_address(kind: str, to: object, where: str = "to") -> str:
    """``to`` if it is a recipient a channel of ``kind`` can send to, else a
    :class:`MessageInputError` naming ``where`` and what was expected."""
    pattern, expected = ADDRESSES[kind]
    if not isinstance(to, str) or len(to) > 254 or not pattern.match(to):
        raise MessageInputError(f"{where}: expected {expected}, got {to!r:.80}")
    return to


def email_sender(value: object) -> tuple[str, str] | None:
    """``(display name, address)`` of an SMTP sender's ``from``: an address, or a name
    and an address (``Shop <shop@example.com>``); None for anything else.

    >>> email_sender("Ada's shop <shop@example.com>")
    ("Ada's shop", 'shop@example.com')
    >>> email_sender("shop@example.com"), email_sender("Shop <shop>")
    (('', 'shop@example.com'), None)
    """
    if not isinstance(value, str) or "\n" in value or "\r" in value:
        return None
    found = getaddresses([value])
    if len(found) != 1:
        return None
    name, address = found[0]
    if len(address) > 254 or not _EMAIL.match(address):
        return None
    return name, address


FROM_EXPECTED = "expected an e-mail address, or a name and one (Shop <shop@example.com>)"
# Headers stay as given (compat32 parses none of them back: the modern policy's header
# parsing was most of a message's cost; one not in ASCII goes out as UTF-8 encoded
# words), bodies in quoted-printable UTF-8, CRLF lines
_SMTP_POLICY = policy.compat32.clone(linesep="\r\n")
_UTF8 = charset.Charset("utf-8")
_UTF8.body_encoding = charset.QP


def _text(body: str, subtype: str) -> MIMENonMultipart:
    part = MIMENonMultipart("text", subtype, policy=_SMTP_POLICY, charset="utf-8")
    part.set_payload(body, _UTF8)
    return part


@dataclass(frozen=True, slots=True, kw_only=True)
class Rendered:
    """A message as its template made it: ``subject`` and ``html`` for email only."""

    to: str
    text: str
    subject: str = ""
    html: str = ""
    key: str = ""  # stable across the attempts of one message: the work's id


class Provider:
    """One sender's connection to its provider (see the module docstring)."""

    kind: ClassVar[str]
    channel: ClassVar[str]
    settings: ClassVar[Mapping[str, Any]]
    required: ClassVar[tuple[str, ...]] = ()

    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        self.name = name
        self.options = dict(options)

    async def send(self, message: Rendered) -> str:
        """Hand ``message`` to the provider; the provider's id for it."""
        raise NotImplementedError

    def _refused(self, what: str, *, retryable: bool) -> SendError:
        return SendError(f"sender {self.name!r} ({self.kind}): {what}", retryable=retryable)


def _retryable_status(status: int) -> bool:
    return status == 429 or status >= 500


class Smtp(Provider):
    """Email over SMTP (see the module docstring)."""

    kind = "smtp"
    channel = "email"
    settings: ClassVar[Mapping[str, Any]] = {
        "host": "127.0.0.1", "port": 25, "username": "", "password": "", "from": "",
        "tls": "none", "timeout": 30.0, "connections": 1, "linger": 0.05}
    required = ("from",)
    choices: ClassVar[Mapping[str, tuple[str, ...]]] = {"tls": ("none", "starttls", "tls")}

    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        super().__init__(name, options)
        # at most `connections` open at once; one is kept open after a message only for
        # a message of this process already waiting for it (so an idle sender holds no
        # connection, and nothing is left open when the process stops)
        self._idle: list[aiosmtplib.SMTP] = []
        self._slots: anyio.Semaphore | None = None
        self._waiting = 0
        self._arrived: anyio.Event | None = None  # set when a message comes to wait
        found = email_sender(self.options["from"])
        if found is None:  # the config's parse said so already
            raise MessagingConfigError(f"sender {name!r}: from: {FROM_EXPECTED}, got "
                                       f"{self.options['from']!r:.80}")
        self._from = found

    def mail(self, message: Rendered) -> Message:
        """The message as MIME: text, and an HTML alternative when there is one."""
        name, address = self._from
        text = _text(message.text, "plain")
        if message.html:
            mail: Message = MIMEMultipart("alternative", policy=_SMTP_POLICY)
            mail.attach(text)
            mail.attach(_text(message.html, "html"))
        else:
            mail = text
        mail["From"] = formataddr((name, address), charset="utf-8")
        mail["To"] = message.to
        mail["Subject"] = message.subject
        domain = address.rpartition("@")[2]
        mail["Message-ID"] = f"<{message.key}@{domain}>" if message.key else \
            make_msgid(domain=domain)
        return mail

    async def _connect(self) -> aiosmtplib.SMTP:
        o = self.options
        client = aiosmtplib.SMTP(hostname=o["host"], port=o["port"],
                                 username=o["username"] or None,
                                 password=o["password"] or None, timeout=o["timeout"],
                                 use_tls=o["tls"] == "tls", start_tls=o["tls"] == "starttls")
        await client.connect()
        return client

    async def send(self, message: Rendered) -> str:
        mail = self.mail(message)
        data = mail.as_bytes(policy=_SMTP_POLICY)
        if self._slots is None:
            self._slots = anyio.Semaphore(self.options["connections"])
        self._waiting += 1
        if self._arrived is not None:
            self._arrived.set()
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        try:
            client = self._idle.pop() if self._idle else None
            try:
                try:
                    if client is None or not client.is_connected:
                        client = await self._connect()
                    await client.sendmail(self._from[1], [message.to], data)
                except aiosmtplib.SMTPServerDisconnected:
                    # a kept connection the server closed meanwhile: once more on a new one
                    client = await self._connect()
                    await client.sendmail(self._from[1], [message.to], data)
            except BaseException as exc:
                if client is not None:
                    client.close()
                if isinstance(exc, aiosmtplib.SMTPException | OSError):
                    raise self._error(exc, message) from None
                raise
            self._idle.append(client)
            if not self._waiting and self.options["linger"] > 0:
                # a message may be on its way: the connection waits a moment for it
                arrived = self._arrived = anyio.Event()
                with anyio.move_on_after(self.options["linger"]):
                    await arrived.wait()
                if self._arrived is arrived:
                    self._arrived = None
        finally:
            while len(self._idle) > self._waiting:  # none kept that nobody waits for
                self._idle.pop(0).close()
            self._slots.release()
        return str(mail["Message-ID"])

    def _error(self, exc: BaseException, message: Rendered) -> SendError:
        o = self.options
        if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
            codes = [r.code for r in exc.recipients]
            return self._refused(f"the server refused {message.to}: {exc}",
                                 retryable=all(400 <= c < 500 for c in codes))
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            return self._refused(f"the server answered {exc.code} {exc.message}",
                                 retryable=400 <= exc.code < 500)
        return self._refused(f"cannot reach {o['host']}:{o['port']}: {exc}", retryable=True)


async def _post(provider: Provider, url: str, *, seconds: float,
                read: Callable[[httpx.Response], str], **request: Any) -> str:
    try:
        async with httpx.AsyncClient(timeout=seconds) as client:
            answer = await client.post(url, **request)
    except httpx.HTTPError as exc:
        raise provider._refused(f"no answer from {url.split('/bot')[0]}: "
                                f"{type(exc).__name__}: {exc}",
                                retryable=True) from None
    try:
        return read(answer)
    except SendError:
        raise
    except (ValueError, KeyError, TypeError):
        raise provider._refused(f"an answer {answer.status_code} that is not the "
                                f"provider's: {answer.text[:200]!r}",
                                retryable=_retryable_status(answer.status_code)) from None


class Twilio(Provider):
    """SMS through an HTTP API in the shape of Twilio's Messages resource."""

    kind = "twilio"
    channel = "sms"
    settings: ClassVar[Mapping[str, Any]] = {
        "url": "https://api.twilio.com", "account_sid": "", "auth_token": "", "from": "",
        "timeout": 30.0}
    required = ("account_sid", "auth_token", "from")

    async def send(self, message: Rendered) -> str:
        o = self.options
        url = f"{o['url'].rstrip('/')}/2010-04-01/Accounts/{o['account_sid']}/Messages.json"

        def read(answer: httpx.Response) -> str:
            body = answer.json()
            if answer.status_code in (200, 201):
                return str(body["sid"])
            raise self._refused(f"{answer.status_code} code {body.get('code')}: "
                                f"{body.get('message')}",
                                retryable=_retryable_status(answer.status_code))

        return await _post(self, url, seconds=o["timeout"], read=read,
                           auth=(o["account_sid"], o["auth_token"]),
                           data={"To": message.to, "From": o["from"], "Body": message.text})


class Telegram(Provider):
    """Chat through a bot API in the shape of Telegram's ``sendMessage``."""

    kind = "telegram"
    channel = "chat"
    settings: ClassVar[Mapping[str, Any]] = {
        "url": "https://api.telegram.org", "token": "", "timeout": 30.0}
    required = ("token",)

    async def send(self, message: Rendered) -> str:
        o = self.options
        url = f"{o['url'].rstrip('/')}/bot{o['token']}/sendMessage"

        def read(answer: httpx.Response) -> str:
            body = answer.json()
            if answer.status_code == 200 and body.get("ok") is True:
                return str(body["result"]["message_id"])
            raise self._refused(f"{answer.status_code} {body.get('description')}",
                                retryable=_retryable_status(answer.status_code))

        return await _post(self, url, seconds=o["timeout"], read=read,
                           json={"chat_id": message.to, "text": message.text})


PROVIDERS: dict[str, type[Provider]] = {p.kind: p for p in (Smtp, Twilio, Telegram)}
"""Each sender kind's provider class."""
