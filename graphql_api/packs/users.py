"""The users pack's part of the GraphQL API (an :class:`graphql_api.extensions.ApiPart`).

Callable before signing in (``anonymous``): ``signUp(email, password, phone)``,
``confirmSignUp(token)``, ``login(email, password)`` (the session in the HttpOnly
cookie of graphql_api.auth, its CSRF token in the answer and the other cookie),
``requestPasswordReset(email, via)`` (the same answer whether the account exists or
not) and ``resetPassword(password, token | email and code)``. Any signed-in principal
(``own``: its own account, no policy needed; a new user has no other rights):
``me``, ``mySessions``, ``logout``, ``revokeSession(id)``, ``requestPhoneCode(phone)``,
``confirmPhone(code)``. Bad input is a typed error naming the field (``InvalidInput``);
a refused login is ``LoginRefused`` with its reason (``refused`` for an unknown email
and a wrong password alike, ``rate_limited`` with ``retryAfter``, ``not_active``).

Routes: ``GET /users/confirm?token=`` (the link of the confirmation mail, public), and
with ``[users.oidc]`` ``/auth/oidc/start`` and ``/auth/oidc/callback`` (public; see
:mod:`graphql_api.packs.users_oidc`).
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import anyio
import strawberry
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from strawberry.types import Info

from graphql_api.auth import clear_session_cookies, set_session_cookies, start_session
from graphql_api.context import context_of, service_of
from graphql_api.extensions import ApiPart
from graphql_api.results import InvalidInput, NotFound
from workers.actions.users import accounts
from workers.actions.users import sagas as ops
from workers.actions.users.errors import SignInError, TokenError, UserInputError, UsersConfigError
from workers.actions.users.sagas import UsersPack

__all__ = ["users_part"]

_ENDED = ("completed", "failed", "cancelled", "compensation_failed")
RESET_ANSWER = "if an account of that address exists, a message is on its way"


@strawberry.type
class User:
    id: strawberry.ID
    email: str
    phone: str | None
    phone_confirmed: bool
    state: str
    created_at: float


@strawberry.type
class UserSession:
    id: strawberry.ID
    label: str
    created_at: float
    expires_at: float
    current: bool


@strawberry.type
class SignedUp:
    work_id: str
    email: str


@strawberry.type
class SignUpConfirmed:
    email: str
    state: str


@strawberry.type
class SignedIn:
    email: str
    csrf_token: str
    expires_at: float


@strawberry.type
class LoginRefused:
    message: str
    reason: str
    retry_after: float | None = None


@strawberry.type
class RateLimited:
    """Too many tries (of a code, a reset, an SMS) for now."""

    message: str
    retry_after: float | None = None


@strawberry.type
class Done:
    message: str
    work_id: str | None = None


SignUpResult = Annotated[SignedUp | InvalidInput, strawberry.union("SignUpResult")]
ConfirmResult = Annotated[SignUpConfirmed | InvalidInput, strawberry.union("ConfirmResult")]
LoginResult = Annotated[SignedIn | LoginRefused | InvalidInput, strawberry.union("LoginResult")]
DoneResult = Annotated[Done | InvalidInput | NotFound | RateLimited,
                       strawberry.union("UsersDoneResult")]


def _limited(exc: SignInError) -> RateLimited:
    return RateLimited(message=str(exc), retry_after=exc.retry_after)


def _user(row: dict[str, Any]) -> User:
    return User(id=strawberry.ID(row["principal_id"]), email=row["email"] or row["name"],
                phone=row["phone"], phone_confirmed=row["phone_confirmed_at"] is not None,
                state=row["state"], created_at=row["created_at"])


def _invalid(exc: UserInputError | TokenError | UsersConfigError, field: str = "") -> InvalidInput:
    return InvalidInput(message=str(exc), field=getattr(exc, "field", "") or field or None)


async def ended(store: Any, work_id: str, seconds: float = 30.0) -> dict[str, Any] | None:
    """The work's row once it ended (polled, bounded), or None if it did not in time."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        row = await store.work(work_id)
        if row is not None and row["status"] in _ENDED:
            return dict(row)
        await anyio.sleep(0.05)
    return None


def users_part(pack: UsersPack) -> ApiPart:
    """The pack's API part over ``pack``."""
    config = pack.config

    def me_of(info: Info) -> Any:
        who = context_of(info).principal
        return None if who is None or who.kind != "person" else who

    @strawberry.type
    class UsersQuery:
        @strawberry.field
        async def me(self, info: Info) -> User | None:
            who = me_of(info)
            found = None if who is None else await accounts.user_by_id(
                service_of(info).store, who.principal_id)
            return None if found is None else _user(found)

        @strawberry.field
        async def my_sessions(self, info: Info) -> list[UserSession]:
            who = me_of(info)
            if who is None:
                return []
            return [UserSession(id=strawberry.ID(r["credential_id"]), label=r["label"],
                                created_at=r["created_at"], expires_at=r["expires_at"],
                                current=r["credential_id"] == who.credential_id)
                    for r in await accounts.sessions(service_of(info).store, who.name)]

    @strawberry.type
    class UsersMutation:
        @strawberry.mutation
        async def sign_up(self, info: Info, email: str, password: str,
                          phone: str | None = None) -> SignUpResult:
            service = service_of(info)
            try:
                work_id = await ops.sign_up(service.runtime, pack, email, password, phone)
            except UserInputError as exc:
                return _invalid(exc)
            return SignedUp(work_id=work_id, email=accounts.check_email(email))

        @strawberry.mutation
        async def confirm_sign_up(self, info: Info, token: str) -> ConfirmResult:
            store = service_of(info).store
            try:
                work_id = await ops.confirm_sign_up(store, token)
            except TokenError as exc:
                return _invalid(exc, "token")
            row = await ended(store, work_id)
            found = await accounts.user_by_id(store, accounts.user_id_for(work_id))
            if row is None or found is None:
                return InvalidInput(message="token: the sign-up did not end in time",
                                    field="token")
            return SignUpConfirmed(email=found["email"], state=found["state"])

        @strawberry.mutation
        async def login(self, info: Info, email: str, password: str) -> LoginResult:
            context = context_of(info)
            store = service_of(info).store
            try:
                found = await accounts.check_login(store, config, pack.passwords, email,
                                                   password, address=context.address)
            except SignInError as exc:
                return LoginRefused(message=str(exc), reason=exc.reason,
                                    retry_after=exc.retry_after)
            seconds = config.session_lifetime
            session, csrf, row = await start_session(store, found["name"], label="password",
                                                     seconds=seconds)
            if context.response is not None:
                set_session_cookies(context.response, session, csrf, seconds=seconds,
                                    secure=context.secure)
            return SignedIn(email=found["email"], csrf_token=csrf,
                            expires_at=row["expires_at"])

        @strawberry.mutation
        async def logout(self, info: Info) -> Done:
            context = context_of(info)
            who = context.principal
            if who is not None and who.credential_id is not None and \
                    who.kind == "person":
                await accounts.revoke_session(service_of(info).store, who.name,
                                              who.credential_id)
            if context.response is not None:
                clear_session_cookies(context.response)
            return Done(message="signed out")

        @strawberry.mutation
        async def revoke_session(self, info: Info, id: strawberry.ID) -> DoneResult:
            who = me_of(info)
            if who is None or not await accounts.revoke_session(
                    service_of(info).store, who.name, str(id)):
                return NotFound(message=f"id: no live session {str(id)!r} of yours",
                                field="id")
            return Done(message="revoked")

        @strawberry.mutation
        async def request_password_reset(self, info: Info, email: str,
                                         via: str = "email") -> DoneResult:
            try:
                work_id = await ops.request_reset(service_of(info).runtime, pack, email, via)
            except UserInputError as exc:
                return _invalid(exc)
            except SignInError as exc:
                return _limited(exc)
            del work_id  # not shown: it would tell whether the account exists
            return Done(message=RESET_ANSWER)

        @strawberry.mutation
        async def reset_password(self, info: Info, password: str, token: str | None = None,
                                 email: str | None = None, code: str | None = None
                                 ) -> DoneResult:
            service = service_of(info)
            if token is None and (email is None or code is None):
                return InvalidInput(message="token: give the mail's token, or the email "
                                    "and the code of the SMS", field="token")
            try:
                work_id = await ops.reset_password(service.store, pack, service.secrets,
                                                   password, token=token, email=email,
                                                   code=code)
            except (UserInputError, TokenError, UsersConfigError) as exc:
                return _invalid(exc, "code" if code is not None else "token")
            except SignInError as exc:
                return _limited(exc)
            row = await ended(service.store, work_id)
            if row is None or row["status"] != "completed":
                return InvalidInput(message="token: the reset did not end in time",
                                    field="token")
            return Done(message="the password is changed; every session was signed out",
                        work_id=work_id)

        @strawberry.mutation
        async def request_phone_code(self, info: Info, phone: str) -> DoneResult:
            who = me_of(info)
            if who is None:
                return InvalidInput(message="sign in as a user first", field="phone")
            try:
                work_id = await ops.request_phone_code(service_of(info).runtime, pack,
                                                       who.principal_id, phone)
            except UserInputError as exc:
                return _invalid(exc)
            except SignInError as exc:
                return _limited(exc)
            return Done(message="a code is on its way", work_id=work_id)

        @strawberry.mutation
        async def confirm_phone(self, info: Info, code: str) -> DoneResult:
            who = me_of(info)
            store = service_of(info).store
            if who is None:
                return InvalidInput(message="sign in as a user first", field="code")
            try:
                work_id = await ops.confirm_phone(store, pack, who.principal_id, code)
            except TokenError as exc:
                return _invalid(exc, "code")
            except SignInError as exc:
                return _limited(exc)
            row = await ended(store, work_id)
            if row is None or row["status"] != "completed":
                return InvalidInput(message="code: the confirmation did not end in time",
                                    field="code")
            return Done(message="the phone is confirmed", work_id=work_id)

    def routes(service: Any) -> list[Any]:
        async def confirm_link(request: Request) -> Response:
            try:
                work_id = await ops.confirm_sign_up(service.store,
                                                    request.query_params.get("token"))
            except TokenError as exc:
                return JSONResponse({"confirmed": False, "reason": exc.reason,
                                     "message": str(exc)}, status_code=400)
            row = await ended(service.store, work_id)
            return JSONResponse({"confirmed": row is not None
                                 and row["status"] == "completed"})

        made: list[Any] = [Route("/users/confirm", confirm_link, methods=["GET"])]
        if config.oidc is not None:
            from .users_oidc import oidc_routes

            made += oidc_routes(pack, service)
        return made

    anonymous = frozenset({"signUp", "confirmSignUp", "login", "requestPasswordReset",
                           "resetPassword"})
    return ApiPart(name="users", query=UsersQuery, mutation=UsersMutation,
                   anonymous=anonymous,
                   own=anonymous | {"me", "mySessions", "logout", "revokeSession",
                                    "requestPhoneCode", "confirmPhone"},
                   routes=routes,
                   public=["/users/confirm"] + (["/auth/oidc/start", "/auth/oidc/callback"]
                                                if config.oidc is not None else []))

