"""A small real OpenID Connect provider on loopback for the OIDC login test: discovery,
an authorization endpoint that signs its one person in at once (redirecting back with
a code), a token endpoint (client_secret_basic, PKCE S256 checked, codes single-use)
answering an id_token signed RS256 with a key made for the test, and the JWKS. Knobs:
``email``, ``email_verified``, and ``forge`` (sign with another key than the JWKS's)."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey


class OidcProvider:
    def __init__(self, client_id: str = "stepsaga", client_secret: str = "s3cret") -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.key = RSAKey.generate_key(2048, parameters={"kid": "test-key"})
        self.other = RSAKey.generate_key(2048, parameters={"kid": "test-key"})
        self.email = "grace@example.com"
        self.email_verified = True
        self.forge = False
        self.codes: dict[str, dict[str, Any]] = {}
        self.token_requests = 0
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> OidcProvider:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def id_token(self, nonce: str) -> str:
        now = int(time.time())
        claims = {"iss": self.url, "aud": self.client_id, "sub": "grace-1",
                  "email": self.email, "email_verified": self.email_verified,
                  "nonce": nonce, "iat": now, "exp": now + 300}
        return jwt.encode({"alg": "RS256", "kid": "test-key"}, claims,
                          self.other if self.forge else self.key)


def _handler(provider: OidcProvider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _json(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            url = urlparse(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            if url.path == "/.well-known/openid-configuration":
                self._json(200, {"issuer": provider.url,
                                 "authorization_endpoint": f"{provider.url}/authorize",
                                 "token_endpoint": f"{provider.url}/token",
                                 "jwks_uri": f"{provider.url}/jwks",
                                 "response_types_supported": ["code"],
                                 "id_token_signing_alg_values_supported": ["RS256"]})
            elif url.path == "/jwks":
                self._json(200, KeySet([provider.key]).as_dict(private=False))
            elif url.path == "/authorize":
                if query.get("client_id") != provider.client_id or \
                        query.get("response_type") != "code" or \
                        query.get("code_challenge_method") != "S256" or \
                        "openid" not in query.get("scope", "").split():
                    self._json(400, {"error": "invalid_request"})
                    return
                code = secrets.token_urlsafe(16)
                with provider.lock:
                    provider.codes[code] = {"nonce": query.get("nonce", ""),
                                            "challenge": query["code_challenge"],
                                            "redirect_uri": query["redirect_uri"]}
                self.send_response(302)
                self.send_header("Location", query["redirect_uri"] + "?" + urlencode(
                    {"code": code, "state": query.get("state", "")}))
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self._json(404, {"error": "not_found"})

        def do_POST(self) -> None:
            if urlparse(self.path).path != "/token":
                self._json(404, {"error": "not_found"})
                return
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            form = {k: v[0] for k, v in parse_qs(body).items()}
            auth = self.headers.get("Authorization", "")
            given = base64.b64decode(auth[6:]).decode() if auth.startswith("Basic ") else ""
            with provider.lock:
                provider.token_requests += 1
                grant = provider.codes.pop(form.get("code", ""), None)  # single-use
            if given != f"{provider.client_id}:{provider.client_secret}":
                self._json(401, {"error": "invalid_client"})
                return
            verifier = form.get("code_verifier", "")
            challenge = base64.urlsafe_b64encode(
                hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
            if grant is None or form.get("grant_type") != "authorization_code" or \
                    form.get("redirect_uri") != grant["redirect_uri"] or \
                    challenge != grant["challenge"]:
                self._json(400, {"error": "invalid_grant"})
                return
            self._json(200, {"access_token": secrets.token_urlsafe(16), "token_type": "Bearer",
                             "expires_in": 300, "id_token": provider.id_token(grant["nonce"])})

    return Handler
