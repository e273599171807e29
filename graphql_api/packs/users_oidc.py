"""Login with an OpenID Connect provider (``[users.oidc]``): the authorization code
flow with PKCE, the parameters made by authlib, the id_token (RS256 and the other
asymmetric algorithms the provider's JWKS holds) checked with joserfc, authlib's JOSE
library: its signature against the provider's keys, its issuer, audience, expiry and
the nonce of this login.

- ``GET /auth/oidc/start?next=/path``: to the provider's authorization endpoint (from
  its discovery document, read once per process); the state, nonce and PKCE verifier
  in a short-lived HttpOnly cookie of this server.
- ``GET /auth/oidc/callback?code=...&state=...``: the state checked against the
  cookie, the code exchanged at the token endpoint, the id_token checked; the user of
  its (verified) email found, or made active (the provider confirmed the address) in
  ``[users] groups``; then a session, as a password login makes one, and a redirect to
  ``next``.

Both are public routes (graphql_api.auth lets them in before signing in).
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any
from urllib.parse import quote

import httpx
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from graphql_api.auth import set_session_cookies, start_session
from workers.actions.users import accounts
from workers.actions.users.config import OidcSpec
from workers.actions.users.errors import SignInError, UserInputError
from workers.actions.users.sagas import UsersPack

__all__ = ["OidcError", "Provider", "oidc_routes"]

COOKIE = "stepsaga_oidc"
_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"]
_FLOW_SECONDS = 600


class OidcError(SignInError):
    """The provider's answer cannot be taken (the message says which part)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="oidc")


class Provider:
    """One OpenID Connect provider: its discovery document and keys, read when first
    needed (the keys again when an id_token names a key they lack)."""

    def __init__(self, spec: OidcSpec, redirect_uri: str) -> None:
        self.spec = spec
        self.redirect_uri = redirect_uri
        self._discovered: dict[str, Any] | None = None
        self._keys: KeySet | None = None

    async def _get(self, url: str) -> dict[str, Any]:
        try:
            async with httpx.AsyncClient(timeout=self.spec.timeout) as client:
                answer = await client.get(url)
            answer.raise_for_status()
            found = answer.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise OidcError(f"the provider's {url} cannot be read: {exc}") from None
        if not isinstance(found, dict):
            raise OidcError(f"the provider's {url} is not a JSON object")
        return found

    async def discovered(self) -> dict[str, Any]:
        if self._discovered is None:
            found = await self._get(f"{self.spec.issuer}/.well-known/openid-configuration")
            for key in ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri"):
                if not isinstance(found.get(key), str):
                    raise OidcError(f"the provider's discovery document has no {key}")
            if found["issuer"].rstrip("/") != self.spec.issuer:
                raise OidcError(f"the provider says it is {found['issuer']!r}, not "
                                f"users.oidc.issuer {self.spec.issuer!r}")
            self._discovered = found
        return self._discovered

    async def keys(self, refresh: bool = False) -> KeySet:
        if self._keys is None or refresh:
            found = await self._get((await self.discovered())["jwks_uri"])
            try:
                self._keys = KeySet.import_key_set(found)  # type: ignore[arg-type]
            except (JoseError, ValueError, TypeError, KeyError) as exc:
                raise OidcError(f"the provider's JWKS cannot be read: {exc}") from None
        return self._keys

    async def authorize_url(self, state: str, nonce: str, verifier: str) -> str:
        endpoint = (await self.discovered())["authorization_endpoint"]
        return str(prepare_grant_uri(
            endpoint, self.spec.client_id, "code", redirect_uri=self.redirect_uri,
            scope=self.spec.scope, state=state, nonce=nonce,
            code_challenge=create_s256_code_challenge(verifier),
            code_challenge_method="S256"))

    async def exchange(self, code: str, verifier: str) -> dict[str, Any]:
        """The token endpoint's answer for ``code`` (client_secret_basic)."""
        endpoint = (await self.discovered())["token_endpoint"]
        try:
            async with httpx.AsyncClient(timeout=self.spec.timeout) as client:
                answer = await client.post(endpoint, data={
                    "grant_type": "authorization_code", "code": code,
                    "redirect_uri": self.redirect_uri, "code_verifier": verifier},
                    auth=(self.spec.client_id, self.spec.client_secret))
            found = answer.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise OidcError(f"the provider's token endpoint did not answer: {exc}") from None
        if answer.status_code != 200 or not isinstance(found, dict) or \
                not isinstance(found.get("id_token"), str):
            error = found.get("error") if isinstance(found, dict) else None
            raise OidcError(f"the provider refused the code ({answer.status_code} "
                            f"{error or 'no id_token'})")
        return found

    async def claims(self, id_token: str, nonce: str) -> dict[str, Any]:
        """The id_token's claims, checked: signature, issuer, audience, expiry, nonce."""
        try:
            try:
                token = jwt.decode(id_token, await self.keys(), algorithms=_ALGORITHMS)
            except (JoseError, ValueError):  # a key rotated in since they were read?
                token = jwt.decode(id_token, await self.keys(refresh=True),
                                   algorithms=_ALGORITHMS)
            JWTClaimsRegistry(
                iss={"essential": True, "value": (await self.discovered())["issuer"]},
                aud={"essential": True, "value": self.spec.client_id},
                exp={"essential": True}, sub={"essential": True},
                nonce={"essential": True, "value": nonce}).validate(token.claims)
        except (JoseError, ValueError) as exc:
            raise OidcError(f"the id_token is refused: {exc}") from None
        return dict(token.claims)


async def _user_of(pack: UsersPack, store: Any, claims: dict[str, Any]) -> dict[str, Any]:
    """The user of the claims' email: found, or made active now."""
    if claims.get("email_verified") is False:
        raise OidcError("the provider has not verified this email address")
    try:
        email = accounts.check_email(claims.get("email"), "email")
    except UserInputError as exc:
        raise OidcError(f"the id_token's {exc}") from None
    found = await accounts.user(store, email)
    if found is None:
        from engine.store import principals as pr

        made = await pr.create(store, email, kind="person", email=email,
                               groups=pack.config.groups)
        await accounts.activate(store, made["principal_id"])
        found = await accounts.user(store, email)
    elif found["state"] == "pending":  # the provider confirmed the address
        await accounts.activate(store, found["principal_id"], pack.config.groups)
        found = await accounts.user(store, email)
    assert found is not None
    if found["state"] != "active":
        raise OidcError(f"this account is {found['state']}")
    return found


def _safe_next(value: str | None) -> str:
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def oidc_routes(pack: UsersPack, service: Any) -> list[Any]:
    """``/auth/oidc/start`` and ``/auth/oidc/callback`` (see the module docstring)."""
    spec = pack.config.oidc
    assert spec is not None
    provider = Provider(spec, pack.config.redirect_uri)

    def refused(message: str, status: int = 400) -> Response:
        response = JSONResponse({"errors": [{"message": message,
                                             "extensions": {"code": "oidc"}}]},
                                status_code=status)
        response.delete_cookie(COOKIE, path="/auth/oidc")
        return response

    async def start(request: Request) -> Response:
        state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        verifier = secrets.token_urlsafe(48)
        flow = {"state": state, "nonce": nonce, "verifier": verifier,
                "next": _safe_next(request.query_params.get("next")),
                "until": time.time() + _FLOW_SECONDS}
        try:
            url = await provider.authorize_url(state, nonce, verifier)
        except OidcError as exc:
            return refused(str(exc), 502)
        response = RedirectResponse(url, 303)
        # Lax: the provider's redirect back is a top-level GET from its site
        response.set_cookie(COOKIE, quote(json.dumps(flow)), max_age=_FLOW_SECONDS,
                            httponly=True, samesite="lax", path="/auth/oidc",
                            secure=request.url.scheme == "https")
        return response

    async def callback(request: Request) -> Response:
        from urllib.parse import unquote

        try:
            flow = json.loads(unquote(request.cookies.get(COOKIE, "")))
            assert isinstance(flow, dict) and flow["until"] > time.time()
        except (ValueError, AssertionError, KeyError, TypeError):
            return refused("no login with the provider is under way here (or it took "
                           "too long): start again at /auth/oidc/start")
        if request.query_params.get("error"):
            return refused(f"the provider refused: {request.query_params['error']}")
        state, code = request.query_params.get("state"), request.query_params.get("code")
        if not state or not secrets.compare_digest(str(state), str(flow.get("state"))):
            return refused("state: not the state of the login started here")
        if not code:
            return refused("code: the provider's answer has no code")
        try:
            tokens = await provider.exchange(code, flow["verifier"])
            claims = await provider.claims(tokens["id_token"], flow["nonce"])
            found = await _user_of(pack, service.store, claims)
        except OidcError as exc:
            return refused(str(exc), 401)
        seconds = pack.config.session_lifetime
        session, csrf, _ = await start_session(service.store, found["name"], label="oidc",
                                               seconds=seconds)
        response = RedirectResponse(flow["next"], 303)
        set_session_cookies(response, session, csrf, seconds=seconds,
                            secure=request.url.scheme == "https")
        response.delete_cookie(COOKIE, path="/auth/oidc")
        return response

    return [Route("/auth/oidc/start", start, methods=["GET"]),
            Route("/auth/oidc/callback", callback, methods=["GET"])]
