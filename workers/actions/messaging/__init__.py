"""Messaging run as sagas: email over SMTP, SMS through an HTTP provider in the shape
of Twilio's, chat through a bot API in the shape of Telegram's, from Jinja2
templates; several senders per channel used in turn across every node, failover,
retries with backoff, rate limits, and channels paused, resumed, purged and deleted.

See :mod:`.app` for loading it, :mod:`.config` for its ``[messaging]`` section,
:mod:`.sagas` for the saga and :mod:`.channels` for the channels' operations.
"""

from __future__ import annotations

from .app import app, messaging_app
from .channels import RESUME_SIGNAL, SEND_SAGA, Channel, Channels
from .config import ChannelSpec, MessagingConfig, SenderSpec, TemplateSpec, parse
from .errors import (
    ChannelError,
    MessageInputError,
    MessagingConfigError,
    MessagingError,
    SendError,
)
from .hooks import notifier
from .providers import PROVIDERS, Provider, Rendered, Smtp, Telegram, Twilio
from .sagas import MessagingPack, message, messaging_sagas, retry_message, send_message
from .templates import Templates

__all__ = ["PROVIDERS", "RESUME_SIGNAL", "SEND_SAGA", "Channel", "ChannelError",
           "ChannelSpec", "Channels", "MessageInputError", "MessagingConfig",
           "MessagingConfigError", "MessagingError", "MessagingPack", "Provider", "Rendered",
           "SendError", "SenderSpec", "Smtp", "Telegram", "TemplateSpec", "Templates",
           "Twilio", "app", "message", "messaging_app", "messaging_sagas", "notifier", "parse",
           "retry_message", "send_message"]
