"""The payment provider's client: an HTTP API in the shape of Stripe's PaymentIntents
and Refunds.

- ``POST /v1/payment_intents`` (``amount``, ``currency``, ``payment_method``,
  ``confirm=true``, ``metadata[...]``): a payment intent, ``status`` ``succeeded`` when
  the charge went through.
- ``POST /v1/refunds`` (``payment_intent``, ``amount``, ``metadata[...]``): a refund,
  ``status`` ``succeeded`` or ``pending`` (the provider will finish it), ``failed``.

Requests are form-encoded with the secret key as a Bearer token and an
``Idempotency-Key`` header: the provider answers a repeat of a key with the first
answer, so a request sent again after a crash or a lost answer has no second effect.
Errors come as ``{"error": {"type", "code", "message"}}``: 402 is a declined payment,
400/401/403/404 a request that will never succeed, 409 (the same key in flight), 429
and 5xx are worth retrying, as is no answer at all.
"""

from __future__ import annotations

from typing import Any

import httpx

from .config import ProviderSpec
from .errors import PaymentDeclined, ProviderError

__all__ = ["PaymentProvider"]

_RETRYABLE = frozenset({409, 429})


class PaymentProvider:
    """Charges and refunds through the provider of ``spec``."""

    def __init__(self, spec: ProviderSpec) -> None:
        self.spec = spec

    async def charge(self, *, amount: int, currency: str, payment_method: str,
                     idempotency_key: str, metadata: dict[str, str]) -> dict[str, Any]:
        """A payment intent confirmed at once; :class:`PaymentDeclined` when the payment
        method is refused, :class:`ProviderError` when it did not succeed."""
        found = await self._post("/v1/payment_intents", {
            "amount": amount, "currency": currency, "payment_method": payment_method,
            "confirm": "true", **_metadata(metadata)}, idempotency_key)
        if found.get("status") != "succeeded":
            raise PaymentDeclined(f"payment intent {found.get('id')!r} is "
                                  f"{found.get('status')!r}, not succeeded: the payment "
                                  "method needs another step or was refused",
                                  status=200, code=str(found.get("status")))
        return found

    async def refund(self, *, payment_intent: str, amount: int, idempotency_key: str,
                     metadata: dict[str, str]) -> dict[str, Any]:
        """A refund of ``amount`` of the charge of ``payment_intent``."""
        found = await self._post("/v1/refunds", {
            "payment_intent": payment_intent, "amount": amount, **_metadata(metadata)},
            idempotency_key)
        if found.get("status") not in ("succeeded", "pending"):
            raise ProviderError(f"refund {found.get('id')!r} of {payment_intent} is "
                                f"{found.get('status')!r}", status=200,
                                code=str(found.get("status")))
        return found

    async def _post(self, path: str, form: dict[str, Any], key: str) -> dict[str, Any]:
        url = self.spec.url + path
        headers = {"Authorization": f"Bearer {self.spec.key}", "Idempotency-Key": key}
        try:
            async with httpx.AsyncClient(timeout=self.spec.timeout) as client:
                answer = await client.post(url, data={k: str(v) for k, v in form.items()},
                                           headers=headers)
        except httpx.HTTPError as exc:  # no answer: the same key again is safe
            raise ProviderError(f"POST {url}: no answer ({type(exc).__name__}: {exc})",
                                retryable=True) from None
        try:
            body = answer.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        if answer.status_code == 200:
            return body
        found = body.get("error")
        error: dict[str, Any] = found if isinstance(found, dict) else {}
        message = f"POST {url}: HTTP {answer.status_code}: " \
                  f"{error.get('message') or answer.text[:200]}"
        code = str(error.get("code") or error.get("type") or "")
        if answer.status_code == 402:
            raise PaymentDeclined(message, status=402, code=code)
        raise ProviderError(message, status=answer.status_code, code=code,
                            retryable=answer.status_code in _RETRYABLE or
                            answer.status_code >= 500)


def _metadata(metadata: dict[str, str]) -> dict[str, str]:
    return {f"metadata[{k}]": v for k, v in metadata.items()}
