"""The orders pack's errors.

::

    OrderError                          any failure of a cart, an order or a refund
    ├── OrderConfigError (ValueError)   a setting of [orders] that cannot be used
    ├── OrderInputError (ValueError)    a cart line, an order or a refund asked wrongly
    │                                   (unknown product, negative quantity, a refund
    │                                   larger than what is left of the charge)
    ├── OrderStateError                 a cart or an order not in a state that allows it
    │                                   (a cart ordered already, a refund of an order
    │                                   that is not completed)
    ├── OutOfStockError                 not enough stock or keys left for an order
    └── ProviderError                   the payment provider refused or could not answer
        └── PaymentDeclined             the payment method was declined (HTTP 402)

Whether a failure is worth retrying is the error's ``retryable`` field (the engine
reads it): a provider that is busy or down (HTTP 409, 429, 5xx, no answer) is retried,
a declined card, a bad setting or a bad input never gets better.
"""

from __future__ import annotations

from engine import StageFailure

__all__ = ["OrderConfigError", "OrderError", "OrderInputError", "OrderStateError",
           "OutOfStockError", "PaymentDeclined", "ProviderError"]


class OrderError(StageFailure):
    """Any failure of the orders pack."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message, retryable=retryable)


class OrderConfigError(OrderError, ValueError):
    """A setting of the ``[orders]`` section that cannot be used; the message names it."""


class OrderInputError(OrderError, ValueError):
    """A cart line, an order or a refund that cannot be taken; the message names the
    field. Nothing stored was changed."""


class OrderStateError(OrderError):
    """A cart or an order whose state does not allow what was asked; nothing changed."""


class OutOfStockError(OrderError):
    """An order asks for more than the stock on hand or the free keys of a product."""


class ProviderError(OrderError):
    """The payment provider answered with an error, or not at all; ``status`` is the
    HTTP status (0: no answer) and ``code`` the provider's error code, if any."""

    def __init__(self, message: str, *, status: int = 0, code: str = "",
                 retryable: bool = False) -> None:
        super().__init__(message, retryable=retryable)
        self.status = status
        self.code = code


class PaymentDeclined(ProviderError):
    """The payment method was declined: the customer must use another."""
