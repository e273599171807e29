"""The messaging pack's part of the API (an :class:`graphql_api.extensions.ApiPart`):
its channels listed, created, paused, resumed, purged and deleted, messages sent and
failed ones sent again. The resolvers call :class:`.channels.Channels` and the
service; the rules are there. Each checks the policies over ``messaging.send`` with
the channel in the input (``{"saga": "messaging.send", "input": {"channel": ...}}``),
so a policy's condition may name a channel. A refusal is a typed result naming the
argument at fault; nothing stored changes then.

- ``messagingChannels``, ``messagingChannel(name)`` (read)
- ``createMessagingChannel(name, kind, senders)``, ``deleteMessagingChannel(name)``
  (admin)
- ``pauseMessagingChannel``, ``resumeMessagingChannel``, ``purgeMessagingChannel``
  (steer; recorded in the audit log)
- ``sendMessage(channel, template, to, context)``, ``retryMessage(workId)`` (write):
  the message's work id, queued for the worker nodes
"""

from __future__ import annotations

import json
from typing import Annotated, Any, cast

import strawberry
from graphql import GraphQLError
from strawberry.scalars import JSON
from strawberry.types import Info

from graphql_api.access import require
from graphql_api.audit import actor
from graphql_api.context import service_of
from graphql_api.extensions import ApiPart
from graphql_api.results import Conflict, InvalidInput, NotFound, WrongState, error_result
from graphql_api.service import ApiError
from workers.actions.messaging.channels import SEND_SAGA, Channel
from workers.actions.messaging.errors import ChannelError, MessagingError
from workers.actions.messaging.sagas import MessagingPack, message

__all__ = ["messaging_part"]


@strawberry.type
class MessagingChannel:
    name: str
    kind: str
    senders: list[str]
    state: str
    turns: int
    declared: bool
    changed_by: str
    created_at: float
    updated_at: float
    queued: int


@strawberry.type
class ChannelChanged:
    channel: MessagingChannel
    messages: int  # released (resume) or cancelled (purge, delete)


@strawberry.type
class MessageQueued:
    work_id: str


Errors = NotFound | WrongState | InvalidInput | Conflict
ChannelResult = Annotated[MessagingChannel | NotFound | WrongState | InvalidInput | Conflict,
                          strawberry.union("MessagingChannelResult")]
ChangeResult = Annotated[ChannelChanged | NotFound | WrongState | InvalidInput | Conflict,
                         strawberry.union("MessagingChannelChangeResult")]
SendResult = Annotated[MessageQueued | NotFound | WrongState | InvalidInput | Conflict,
                       strawberry.union("SendMessageResult")]


def _refused(exc: MessagingError) -> Errors:
    if isinstance(exc, ChannelError):
        return error_result(ApiError(exc.kind, str(exc), field=exc.field))
    # the pack's messages start with the field at fault: "to: expected ...",
    # "template 'x' (x.txt): 'name' is undefined ..."
    field = str(exc).split(":", 1)[0].split(" ", 1)[0]
    return InvalidInput(message=str(exc), field=field if field.isidentifier() else None)


def messaging_part(pack: MessagingPack) -> ApiPart:
    """The pack's fields over ``pack``'s config."""

    async def shown(info: Info, channel: Channel) -> MessagingChannel:
        channels = pack.channels(service_of(info).store)
        return MessagingChannel(
            name=channel.name, kind=channel.kind, senders=list(channel.senders),
            state=channel.state, turns=channel.turns, declared=channel.declared,
            changed_by=channel.changed_by, created_at=channel.created_at,
            updated_at=channel.updated_at, queued=len(await channels.queued(channel.name)))

    async def allowed(info: Info, action: str, name: object) -> None:
        await require(info, action, {"saga": SEND_SAGA, "input": {"channel": name}})

    @strawberry.type
    class MessagingQuery:
        @strawberry.field(description="The messaging pack's channels, by name.")
        async def messaging_channels(self, info: Info) -> list[MessagingChannel]:
            found = []
            for channel in await pack.channels(service_of(info).store).list():
                try:
                    await allowed(info, "read", channel.name)
                except GraphQLError:  # forbidden: a channel this principal may not see
                    continue
                found.append(await shown(info, channel))
            return found

        @strawberry.field(description="One channel, or null.")
        async def messaging_channel(self, info: Info, name: str) -> MessagingChannel | None:
            await allowed(info, "read", name)
            channel = await pack.channels(service_of(info).store).find(name)
            if channel is None or channel.state == "deleted":
                return None
            return await shown(info, channel)

    @strawberry.type
    class MessagingMutation:
        @strawberry.mutation(description="A new channel of kind email, sms or chat sending "
                             "through senders of [messaging.senders], used in turn.")
        async def create_messaging_channel(self, info: Info, name: str, kind: str,
                                           senders: list[str], reason: str = ""
                                           ) -> ChannelResult:
            await allowed(info, "admin", name)
            try:
                made = await pack.channels(service_of(info).store).create(
                    name, kind, senders, by=actor(info, ""))
            except MessagingError as exc:
                return _refused(exc)
            return await shown(info, made)

        @strawberry.mutation(description="Hold the channel's messages (as waiting works) "
                             "until it is resumed.")
        async def pause_messaging_channel(self, info: Info, name: str,
                                          reason: str = "") -> ChannelResult:
            await allowed(info, "steer", name)
            try:
                channel = await pack.channels(service_of(info).store).pause(
                    name, by=actor(info, ""))
            except MessagingError as exc:
                return _refused(exc)
            return await shown(info, channel)

        @strawberry.mutation(description="Deliver again: the held messages go on; "
                             "messages is how many were told.")
        async def resume_messaging_channel(self, info: Info, name: str,
                                           reason: str = "") -> ChangeResult:
            await allowed(info, "steer", name)
            try:
                channel, told = await pack.channels(service_of(info).store).resume(
                    name, by=actor(info, ""))
            except MessagingError as exc:
                return _refused(exc)
            return ChannelChanged(channel=await shown(info, channel), messages=told)

        @strawberry.mutation(description="Cancel every message queued for the channel; "
                             "messages is how many.")
        async def purge_messaging_channel(self, info: Info, name: str,
                                          reason: str = "") -> ChangeResult:
            await allowed(info, "steer", name)
            channels = pack.channels(service_of(info).store)
            try:
                cancelled = await channels.purge(name, by=actor(info, ""))
                channel = await channels.get(name, "name")
            except MessagingError as exc:
                return _refused(exc)
            return ChannelChanged(channel=await shown(info, channel), messages=cancelled)

        @strawberry.mutation(description="Delete the channel and cancel what it has "
                             "queued; messages is how many were cancelled.")
        async def delete_messaging_channel(self, info: Info, name: str,
                                           reason: str = "") -> ChangeResult:
            await allowed(info, "admin", name)
            channels = pack.channels(service_of(info).store)
            try:
                gone = await channels.get(name, "name")
                cancelled = await channels.delete(name, by=actor(info, ""))
            except MessagingError as exc:
                return _refused(exc)
            channel = await channels.find(name) or gone
            return ChannelChanged(channel=await shown(info, channel), messages=cancelled)

        @strawberry.mutation(description="Send a message: its work id (messaging.send, "
                             "queued for the worker nodes).")
        async def send_message(self, info: Info, channel: str, template: str, to: str,
                               context: JSON | None = None) -> SendResult:
            try:  # the check stage's rules, at once: a bad message is never queued
                data = message(channel, template, to, cast(Any, context))
                found = await pack.channels(service_of(info).store).get(channel)
                pack.render(found, data)
            except MessagingError as exc:
                return _refused(exc)
            await require(info, "write", {"saga": SEND_SAGA, "input": data})
            try:
                work_id, _ = await service_of(info).create_work(SEND_SAGA, data)
            except ApiError as exc:
                return error_result(exc)
            return MessageQueued(work_id=work_id)

        @strawberry.mutation(description="Send again a message that failed for good or "
                             "was cancelled: the new work's id.")
        async def retry_message(self, info: Info, work_id: str) -> SendResult:
            service = service_of(info)
            row = await service.store.work(work_id)
            if row is None or row["saga"] != SEND_SAGA:
                return NotFound(message=f"workId: {work_id!r} is not a message (a work of "
                                f"{SEND_SAGA})", field="workId")
            if row["status"] not in ("failed", "cancelled"):
                return WrongState(message=f"message {work_id} is {row['status']}; only a "
                                  "failed or cancelled one is sent again",
                                  status=row["status"])
            data = json.loads(row["input"])
            await require(info, "write", {"saga": SEND_SAGA, "input": data})
            try:
                made, _ = await service.create_work(SEND_SAGA, data)
            except ApiError as exc:
                return error_result(exc)
            return MessageQueued(work_id=made)

    return ApiPart(name="messaging", query=MessagingQuery, mutation=MessagingMutation,
                   actions={"messagingChannels": "read", "messagingChannel": "read",
                            "createMessagingChannel": "admin",
                            "deleteMessagingChannel": "admin",
                            "pauseMessagingChannel": "steer",
                            "resumeMessagingChannel": "steer",
                            "purgeMessagingChannel": "steer",
                            "sendMessage": "write", "retryMessage": "write"})

