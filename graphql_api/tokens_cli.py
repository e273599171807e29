"""``stepsaga token ...``: API tokens for scripts and one-time sign-in links for people,
made straight in the store (the same rules as the API's, engine.store.principals).

    stepsaga token create ci-bot --group deployers     # prints the token, once
    stepsaga token list [NAME]
    stepsaga token revoke CREDENTIAL_ID
    stepsaga token link admin --url http://127.0.0.1:8000   # a one-time sign-in URL
    stepsaga policy show                                     # the policies, as JSON
    stepsaga policy set policies.json                        # all of them, at once
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

__all__ = ["add_parser", "run", "run_policy"]
LINK_SECONDS = 15 * 60


def add_parser(commands: Any) -> None:
    token = commands.add_parser("token", help="API tokens and one-time sign-in links")
    token.add_argument("--store", default=None, metavar="URL",
                       help="the store (default: the config's, stepsaga.sqlite)")
    actions = token.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="a new token of a principal (made if new), "
                                "printed once on stdout")
    create.add_argument("name", help="the principal: a service or a person")
    create.add_argument("--group", action="append", default=[],
                        help="a group a new principal joins (repeatable; 'admins': all rights)")
    create.add_argument("--person", action="store_true",
                        help="a new principal is a person (default: a service)")
    create.add_argument("--days", type=float, default=90.0,
                        help="days the token lives (default 90)")
    create.add_argument("--label", default="", help="what the token is for")
    listed = actions.add_parser("list", help="credentials (of one principal), newest first")
    listed.add_argument("name", nargs="?")
    revoke = actions.add_parser("revoke", help="refuse a credential from now on")
    revoke.add_argument("credential_id")
    link = actions.add_parser("link", help="a one-time sign-in URL for a person "
                              f"(lives {LINK_SECONDS // 60} minutes)")
    link.add_argument("name")
    link.add_argument("--url", default="http://127.0.0.1:8000",
                      help="the server's address as a browser reaches it")
    policy = commands.add_parser("policy", help="who may do what (engine.store.policies)")
    policy.add_argument("--store", default=None, metavar="URL",
                        help="the store (default: the config's, stepsaga.sqlite)")
    doing = policy.add_subparsers(dest="action", required=True)
    doing.add_parser("show", help="the policies and their version, as JSON")
    replace = doing.add_parser("set", help="replace every policy at once with a file's "
                               "(a JSON list), in force on every node within a second")
    replace.add_argument("file")
    replace.add_argument("--by", default="stepsaga policy set", help="who changes them")


def _shell() -> str:
    """Who a command run from a shell is, in the audit log: its OS user."""
    import getpass

    try:
        return f"shell:{getpass.getuser()}"
    except Exception:  # no user name for this uid (a container)
        return f"shell:uid {os.getuid()}"


async def run_policy(args: argparse.Namespace) -> int:
    from engine.store import SqlStore, audit
    from engine.store import policies as pol

    from .config import ConfigError, load

    try:
        url = args.store or load(None)["store"]["url"]
        async with SqlStore.open(url) as store:
            if args.action == "show":
                found = await pol.load(store)
                print(json.dumps({"version": found.version, "policies": found.to_json()},
                                 indent=2))
                return 0
            try:
                import anyio

                raw = json.loads(await anyio.Path(args.file).read_text())
            except (OSError, ValueError) as exc:
                print(f"stepsaga: {args.file}: {exc}", file=sys.stderr)
                return 2
            done = await pol.replace(store, raw, by=args.by)
            await audit.record(store, principal=_shell(), action="setPolicies",
                               target_kind="policies", target="policies",
                               details={"version": done.version, "file": args.file})
            print(json.dumps({"version": done.version, "policies": len(done.policies)}))
    except (ConfigError, ValueError) as exc:
        print(f"stepsaga: {exc}", file=sys.stderr)
        return 2
    return 0


async def run(args: argparse.Namespace) -> int:
    from engine.store import SqlStore, audit
    from engine.store import principals as pr

    from .config import ConfigError, load

    try:
        url = args.store or load(None)["store"]["url"]
    except ConfigError as exc:
        print(f"stepsaga: {exc}", file=sys.stderr)
        return 2
    try:
        async with SqlStore.open(url) as store:
            if args.action == "create":
                token, row, made = await pr.issue_token(
                    store, args.name, groups=args.group, person=args.person,
                    seconds=args.days * 86400, label=args.label)
                await audit.record(store, principal=_shell(), action="createToken",
                                   target_kind="principal", target=args.name,
                                   details={"credential_id": row["credential_id"],
                                            "groups": args.group, "made": made})
                if made:
                    print(f"stepsaga: made {'person' if args.person else 'service'} "
                          f"{args.name!r} in {', '.join(args.group) or 'no group'}",
                          file=sys.stderr)
                print(token)
            elif args.action == "list":
                for row in await pr.credentials_of(store, args.name):
                    print(json.dumps({k: row[k] for k in ("credential_id", "kind", "name",
                                                          "label", "created_at",
                                                          "expires_at", "revoked_at")}))
            elif args.action == "revoke":
                if not await pr.revoke(store, args.credential_id):
                    print(f"stepsaga: no live credential {args.credential_id!r}",
                          file=sys.stderr)
                    return 1
                await audit.record(store, principal=_shell(), action="revokeToken",
                                   target_kind="credential", target=args.credential_id)
            else:
                link, _ = await pr.issue(store, args.name, kind="link", label="sign-in link",
                                         seconds=LINK_SECONDS)
                print(f"{args.url.rstrip('/')}/login?once={link}")
    except ValueError as exc:
        print(f"stepsaga: {exc}", file=sys.stderr)
        return 2
    return 0
