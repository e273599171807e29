"""Messages from Jinja2 templates: a template ``NAME`` is its text (``NAME.txt``), and
for email its subject (``NAME.subject``) and optionally an HTML part (``NAME.html``,
autoescaped), from the config's inline templates or its ``templates_dir``.

Rendering is strict: a variable the context does not give is an error naming it
(never an empty string in a sent message), and the sandbox keeps a context's values
from reaching Python internals.

>>> from .config import parse
>>> t = Templates(parse({"templates": {"hi": {"subject": "Hi {{ name }}",
...                                           "text": "Hello {{ name }}",
...                                           "html": "<b>{{ name }}</b>"}}}))
>>> t.render("hi", {"name": "<Ada>"}, email=True)
('Hi <Ada>', 'Hello <Ada>', '<b>&lt;Ada&gt;</b>')
>>> t.render("hi", {}, email=False)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
workers.actions.messaging.errors.MessageInputError: template 'hi' (hi.txt): 'name' is undefined...
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from .config import MessagingConfig
from .errors import MessageInputError, MessagingConfigError

__all__ = ["Templates", "check_source"]

_CHECK = SandboxedEnvironment(undefined=jinja2.StrictUndefined)


def check_source(source: str, where: str) -> None:
    """A :class:`MessagingConfigError` naming ``where`` when ``source`` is not a
    template Jinja2 can compile."""
    try:
        _CHECK.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise MessagingConfigError(f"{where}: line {exc.lineno}: {exc.message}") from None


class Templates:
    """The templates of a config, compiled once and rendered strictly."""

    def __init__(self, config: MessagingConfig) -> None:
        inline: dict[str, str] = {}
        for spec in config.templates.values():
            inline[f"{spec.name}.txt"] = spec.text
            if spec.subject:
                inline[f"{spec.name}.subject"] = spec.subject
            if spec.html:
                inline[f"{spec.name}.html"] = spec.html
        loaders: list[jinja2.BaseLoader] = [jinja2.DictLoader(inline)]
        if config.templates_dir:
            loaders.append(jinja2.FileSystemLoader(config.templates_dir))
        self.env = SandboxedEnvironment(
            loader=jinja2.ChoiceLoader(loaders), undefined=jinja2.StrictUndefined,
            autoescape=jinja2.select_autoescape(enabled_extensions=("html",),
                                                default_for_string=False),
            keep_trailing_newline=False)

    def _one(self, name: str, part: str, context: Mapping[str, Any], *,
             needed: bool) -> str:
        file = f"{name}.{part}"
        try:
            template = self.env.get_template(file)
        except jinja2.TemplateNotFound:
            if not needed:
                return ""
            raise MessageInputError(f"template: unknown template {name!r} (no {file} among "
                                    "the inline templates nor in messaging.templates_dir)"
                                    ) from None
        except jinja2.TemplateSyntaxError as exc:
            raise MessagingConfigError(f"template {name!r} ({file}) line {exc.lineno}: "
                                       f"{exc.message}") from None
        try:
            return template.render(dict(context))
        except jinja2.UndefinedError as exc:
            raise MessageInputError(f"template {name!r} ({file}): {exc.message}; give it "
                                    "in the message's context") from None
        except jinja2.TemplateError as exc:
            raise MessageInputError(f"template {name!r} ({file}): {exc}") from None

    def render(self, name: str, context: Mapping[str, Any], *, email: bool
               ) -> tuple[str, str, str]:
        """``(subject, text, html)``: subject and html only for ``email`` (html empty
        when the template has none); a :class:`MessageInputError` for an unknown
        template or a variable the context lacks."""
        text = self._one(name, "txt", context, needed=True)
        if not email:
            return "", text, ""
        subject = self._one(name, "subject", context, needed=True).strip()
        if "\n" in subject or "\r" in subject:
            raise MessageInputError(f"template {name!r} ({name}.subject): a subject is one "
                                    "line, this one has several")
        return subject, text, self._one(name, "html", context, needed=False)
