"""API tokens through GraphQL, for administrators (``admin`` in the policies): made
and revoked as ``stepsaga token`` does (engine.store.principals, the one place), and
listed without their secrets."""

from __future__ import annotations

from typing import Annotated

import strawberry
from strawberry.types import Info

from engine.store import principals as pr

from .context import service_of
from .results import InvalidInput, NotFound

__all__ = ["Credential", "CredentialResult", "TokenCreated", "create_token", "credentials",
           "revoke_token"]


@strawberry.type
class Credential:
    """A token, session or sign-in link of a principal (never its secret)."""

    credential_id: str
    kind: str
    principal: str
    label: str
    created_at: float
    expires_at: float
    revoked_at: float | None


@strawberry.type
class TokenCreated:
    """The token (shown this once: only its hash is kept) and its record."""

    token: str
    credential: Credential
    principal_created: bool


CredentialResult = Annotated[TokenCreated | InvalidInput, strawberry.union("CredentialResult")]
RevokeResult = Annotated[Credential | NotFound, strawberry.union("RevokeResult")]


def _of(row: dict[str, object], name: str) -> Credential:
    return Credential(credential_id=str(row["credential_id"]), kind=str(row["kind"]),
                      principal=name, label=str(row["label"]),
                      created_at=float(row["created_at"]),  # type: ignore[arg-type]
                      expires_at=float(row["expires_at"]),  # type: ignore[arg-type]
                      revoked_at=None if row.get("revoked_at") is None
                      else float(row["revoked_at"]))  # type: ignore[arg-type]


@strawberry.field
async def credentials(info: Info, principal: str | None = None) -> list[Credential]:
    """Credentials (of one principal, or all), newest first."""
    rows = await pr.credentials_of(service_of(info).store, principal)
    return [_of(r, str(r["name"])) for r in rows]


@strawberry.mutation
async def create_token(info: Info, principal: str, groups: list[str] | None = None,
                       person: bool = False, days: float = 90.0, label: str = ""
                       ) -> CredentialResult:
    """A new API token of ``principal`` (made, in ``groups``, when new)."""
    try:
        token, row, made = await pr.issue_token(service_of(info).store, principal,
                                                groups=groups or [], person=person,
                                                seconds=days * 86400, label=label)
    except ValueError as exc:
        return InvalidInput(message=str(exc), field=None)
    return TokenCreated(token=token, credential=_of(row, principal), principal_created=made)


@strawberry.mutation
async def revoke_token(info: Info, credential_id: str) -> RevokeResult:
    """A credential refused from now on (on every node within a second)."""
    store = service_of(info).store
    if not await pr.revoke(store, credential_id):
        return NotFound(message=f"no live credential {credential_id!r}",
                        field="credentialId")
    row = next(r for r in await pr.credentials_of(store) if r["credential_id"] == credential_id)
    return _of(row, str(row["name"]))
