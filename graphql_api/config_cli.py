"""``stepsaga config``: ``check FILE`` validates a settings file (and the
``STEPSAGA_*`` variables set now) without starting anything; ``show`` prints every
setting of every section with its default and what it does (the one place they are
documented: :mod:`graphql_api.config`'s docstring, which a test holds to the code)."""

from __future__ import annotations

import json
import sys
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(commands: Any) -> None:
    config = commands.add_parser("config", help="check a settings file, or show every "
                                 "setting with its default")
    actions = config.add_subparsers(dest="action", required=True)
    check = actions.add_parser("check", help="validate a TOML settings file without "
                               "starting: exit 0, or 2 naming the key at fault")
    check.add_argument("file", help="the TOML file (as given to --config)")
    actions.add_parser("show", help="every setting of every section, its default and "
                       "what it does")


def run(args: Any) -> int:
    from .config import ConfigError, documented, load

    if args.action == "show":
        print(documented())
        return 0
    try:
        settings = load(args.file)
    except ConfigError as exc:
        print(f"stepsaga config check: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"ok": args.file, "settings": settings}, default=str))
    return 0
