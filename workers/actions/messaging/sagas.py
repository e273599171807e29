"""The messaging pack's saga, built from a checked :class:`MessagingConfig`.

``messaging.send`` ``{"channel", "template", "to", "context": {}}``:

- ``check``: the channel exists, ``to`` is an address of its kind, the template
  renders with the context (an unknown template or variable fails here, for good,
  before anything is sent); when the channel is active the message takes its turn
  here, in the statement that reads the channel's state;
- ``hold``: a branch: ``open`` when the channel is active; ``held`` while it is
  paused: a loop waiting for the signal ``messaging.resume`` (the work shows
  *waiting* and holds no worker slot) until the channel is active again;
- ``deliver``: under the channel's rate limit (key ``messaging:<channel>``), the
  message goes to the sender whose turn it is (the channel's counter in the store: the
  turn check took, or one taken now for a message that was held and for each retry),
  and to the next ones in order when one fails; when every sender failed the stage is
  retried with backoff (``[messaging] attempts``, ``backoff``). A message that failed
  for good is a failed work, shown with each sender's error; :func:`retry_message`
  sends it again.

Other packs send through :func:`send_message` (a work queued for the worker nodes),
or use the saga as a stage of their own (``SagaRef(name="mail", saga="messaging.send")``
after a stage whose output is :func:`message`'s).
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Mapping
from typing import Any

import tenacity

from engine import (
    Branch,
    Loop,
    RetryPolicy,
    Runtime,
    Saga,
    Sleep,
    Stage,
    StageContext,
    Wait,
    WorkStateError,
)
from engine.store import SqlStore

from .channels import RESUME_SIGNAL, SEND_SAGA, Channel, Channels
from .config import RATE_PREFIX, MessagingConfig
from .errors import MessageInputError, MessagingConfigError, SendError
from .providers import PROVIDERS, Provider, Rendered, check_address
from .templates import Templates

__all__ = ["MessagingPack", "message", "messaging_sagas", "retry_message", "send_message"]

_INPUT_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["channel", "template", "to"],
    "properties": {"channel": {"type": "string", "title": "Channel"},
                   "template": {"type": "string", "title": "Template"},
                   "to": {"type": "string", "title": "Recipient"},
                   "context": {"type": "object", "title": "Template variables"}},
    "examples": [{"channel": "email", "template": "welcome", "to": "ada@example.com",
                  "context": {"name": "Ada"}}]}
_HOLD_ROUNDS = 10_000  # a held message wakes once per resume: this many at most
_READY = 4096  # messages checked here whose deliver has not come yet: this many kept


def message(channel: str, template: str, to: str, context: Mapping[str, Any] | None = None
            ) -> dict[str, Any]:
    """The input of ``messaging.send``: ``template`` rendered with ``context`` to ``to``
    over ``channel``; a :class:`MessageInputError` for a field of the wrong type.

    >>> message("email", "welcome", "ada@example.com", {"name": "Ada"})["to"]
    'ada@example.com'
    """
    for field, value in (("channel", channel), ("template", template), ("to", to)):
        if not isinstance(value, str) or not value:
            raise MessageInputError(f"{field}: expected a non-empty string, got {value!r:.60}")
    if context is not None and not isinstance(context, Mapping):
        raise MessageInputError(f"context: expected an object of template variables, got "
                                f"{context!r:.60}")
    return {"channel": channel, "template": template, "to": to,
            "context": dict(context or {})}


def _message(data: Any) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise MessageInputError(f"a message is {{channel, template, to, context}}, got "
                                f"{data!r:.60}")
    return message(data.get("channel"), data.get("template"), data.get("to"),  # type: ignore[arg-type]
                   data.get("context"))


class MessagingPack:
    """What the stages share: the config, its templates, one provider per sender and
    the channels of each store."""

    def __init__(self, config: MessagingConfig) -> None:
        self.config = config
        self.templates = Templates(config)
        self.providers: dict[str, Provider] = {
            s.name: PROVIDERS[s.kind](s.name, s.options) for s in config.senders.values()}
        self._channels: weakref.WeakKeyDictionary[SqlStore, Channels] = \
            weakref.WeakKeyDictionary()
        # work id -> (the message check saw, its channel, as rendered): deliver on this
        # node sends it without reading the channel or rendering again
        self._ready: dict[str, tuple[dict[str, Any], Channel, Rendered]] = {}

    def channels(self, store: SqlStore | None) -> Channels:
        """The channels of ``store`` (one object per store, so it seeds once)."""
        if store is None:
            raise MessagingConfigError("the messaging pack keeps its channels in the store: "
                                       "run its sagas on a runtime or node with a store")
        found = self._channels.get(store)
        if found is None:
            found = self._channels[store] = Channels(store, self.config)
        return found

    def render(self, channel: Channel | str, data: dict[str, Any], key: str = ""
               ) -> Rendered:
        """``data`` rendered for ``channel`` (or a channel's kind); an error naming what
        is wrong with it."""
        kind = channel if isinstance(channel, str) else channel.kind
        to = check_address(kind, data["to"])
        subject, text, html = self.templates.render(
            data["template"], data["context"], email=kind == "email")
        return Rendered(to=to, text=text, subject=subject, html=html, key=key)

    # ------------------------------------------------------------ stages

    async def check(self, ctx: StageContext, data: Any) -> dict[str, Any]:
        checked = _message(data)
        channels = self.channels(ctx.store)
        # a declared channel's kind is the config's; another's is read (or the error)
        spec = self.config.channels.get(checked["channel"])
        kind = spec.kind if spec is not None else (await channels.get(checked["channel"])).kind
        rendered = self.render(kind, checked, key=ctx.work_id)  # bad input takes no turn
        turn, channel = await channels.take_turn(checked["channel"], if_active=True)
        if not turn:  # paused: hold's choice; deliver takes a turn once it is resumed
            return {**checked, "paused": True}
        self._ready[ctx.work_id] = (checked, channel, rendered)
        while len(self._ready) > _READY:
            self._ready.pop(next(iter(self._ready)))
        return {**checked, "paused": False, "turn": turn}

    async def choose(self, ctx: StageContext, data: Any) -> str:
        return "held" if data.get("paused") else "open"

    async def resumed(self, ctx: StageContext, output: Any) -> bool:
        channel = await self.channels(ctx.store).find(_message(output)["channel"])
        return channel is None or channel.state != "paused"

    async def deliver(self, ctx: StageContext, data: Any) -> dict[str, Any]:
        checked = _message(data)
        ready = self._ready.pop(ctx.work_id, None)
        turn = data.get("turn") if ctx.attempt == 1 else None
        if not isinstance(turn, int) or isinstance(turn, bool) or turn < 1:
            turn, channel = await self.channels(ctx.store).take_turn(checked["channel"])
        elif ready is not None and ready[0] == checked:  # checked here, as it is now
            channel = ready[1]
        else:  # checked on another node (or its message edited since)
            channel = await self.channels(ctx.store).get(checked["channel"])
        rendered = ready[2] if ready is not None and ready[0] == checked else \
            self.render(channel, checked, key=ctx.work_id)
        count = len(channel.senders)
        failures: list[dict[str, Any]] = []
        for i in range(count):
            name = channel.senders[(turn - 1 + i) % count]
            provider = self.providers.get(name)
            if provider is None:
                failures.append({"sender": name, "error": "not in [messaging.senders] "
                                 "of this node's config", "retryable": True})
                continue
            try:
                provider_id = await provider.send(rendered)
            except SendError as exc:
                ctx.logger.warning("%s", exc)
                failures.append({"sender": name, "error": str(exc),
                                 "retryable": exc.retryable})
                continue
            return {"channel": channel.name, "to": rendered.to, "sender": name,
                    "provider_id": provider_id, "turn": turn, "failed_over": failures}
        raise SendError(f"channel {channel.name!r}: every sender failed: " + "; ".join(
            f"{f['sender']}: {f['error']}" for f in failures),
            retryable=any(f["retryable"] for f in failures))


def messaging_sagas(config: MessagingConfig, pack: MessagingPack | None = None
                    ) -> list[Saga]:
    """The pack's saga (see the module docstring) over ``config``."""
    pack = pack or MessagingPack(config)
    retry = RetryPolicy(attempts=config.attempts, wait=tenacity.wait_exponential_jitter(
        multiplier=config.backoff, max=config.max_backoff, exp_base=2,
        jitter=config.backoff / 2))
    # the retry policy comes from the config, so the definition's hash changes with
    # it; the stages stay the same, so a node goes on with the messages created under
    # any config (as the backups pack's sagas do)
    return [Saga(
        version=1, continues=(1,),
        name=SEND_SAGA, description="render a message from its template and send it over "
        "a channel, each sender in turn", input_schema=_INPUT_SCHEMA, stages=[
            Stage(name="check", transaction=pack.check),
            Branch(name="hold", choose=pack.choose, cases=[
                Sleep(name="open", seconds=0),  # no call: the message passes through
                Loop(name="held", until=pack.resumed, max_iterations=_HOLD_ROUNDS,
                     body=Wait(name="resume", signal=RESUME_SIGNAL)),
            ]),
            Stage(name="deliver", transaction=pack.deliver, retry=retry,
                  rate_limit_key=RATE_PREFIX + ":{channel}"),
        ])]


async def send_message(runtime: Runtime, channel: str, template: str, to: str,
                       context: Mapping[str, Any] | None = None, *,
                       work_id: str | None = None, here: bool = False) -> str:
    """Send ``template`` rendered with ``context`` to ``to`` over ``channel``: a work of
    ``messaging.send`` queued for the worker nodes (``here``: run by ``runtime``), its
    id. Give a ``work_id`` (one derived from the caller's idempotency key) and a repeat
    after a crash finds the message made the first time instead of sending twice."""
    data = message(channel, template, to, context)
    try:
        return await runtime.start(SEND_SAGA, data, run=here or runtime.store is None,
                                   work_id=work_id)
    except WorkStateError:
        if work_id is None:
            raise
        return work_id  # made before: the same message, not a second one


async def retry_message(runtime: Runtime, work_id: str, *, here: bool = False) -> str:
    """Send again a message that failed for good (or was cancelled): a new work with
    its input, queued like the first; its id."""
    store = runtime.store
    if store is None or not hasattr(store, "work"):
        raise MessageInputError("retrying a message reads it from the store: give the "
                                "runtime one")
    row = await store.work(work_id)
    if row is None or row["saga"] != SEND_SAGA:
        raise MessageInputError(f"work_id: {work_id!r} is not a message (a work of "
                                f"{SEND_SAGA})")
    if row["status"] not in ("failed", "cancelled"):
        raise MessageInputError(f"work_id: message {work_id} is {row['status']}; only a "
                                "failed or cancelled one is sent again")
    data = _message(json.loads(row["input"]))
    return await runtime.start(SEND_SAGA, data, run=here)
