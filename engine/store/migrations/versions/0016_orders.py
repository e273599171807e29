"""The orders pack's tables: ``order_stock``, ``order_keys`` (the pool of keys of digital
goods), ``order_carts`` and ``order_cart_lines``, ``orders``, ``order_reservations`` and
``order_refunds`` (see engine.store.schema). New tables only: nodes of the version
before keep running while this one migrates.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_POSITION = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TIME = sa.Float(precision=53)


def upgrade() -> None:
    op.create_table(
        "order_stock",
        sa.Column("sku", sa.String(64), primary_key=True),
        sa.Column("on_hand", sa.Integer, nullable=False))
    op.create_table(
        "order_keys",
        sa.Column("key_id", _POSITION, primary_key=True, autoincrement=True),
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("code", sa.Text, nullable=False),
        sa.Column("added_at", _TIME, nullable=False),
        sa.Column("order_id", sa.String(64)),
        sa.Column("issued_at", _TIME),
        sa.Column("revoked_at", _TIME),
        sa.UniqueConstraint("sku", "code", name="order_keys_code"))
    op.create_index("order_keys_free", "order_keys", ["sku", "order_id", "key_id"])
    op.create_table(
        "order_carts",
        sa.Column("cart_id", sa.String(40), primary_key=True),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.Column("order_id", sa.String(64)))
    op.create_table(
        "order_cart_lines",
        sa.Column("cart_id", sa.String(40), sa.ForeignKey("order_carts.cart_id",
                                                          ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("sku", sa.String(64), primary_key=True),
        sa.Column("quantity", sa.Integer, nullable=False))
    op.create_table(
        "orders",
        sa.Column("order_id", sa.String(64), primary_key=True),
        sa.Column("work_id", sa.String(64), nullable=False),
        sa.Column("cart_id", sa.String(40)),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("status", sa.String(30), nullable=False),
        sa.Column("lines", sa.Text, nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("payment_intent", sa.String(200)),
        sa.Column("refunded", sa.BigInteger, nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False))
    op.create_index("orders_owner", "orders", ["owner", "created_at"])
    op.create_table(
        "order_reservations",
        sa.Column("order_id", sa.String(64), primary_key=True),
        sa.Column("sku", sa.String(64), primary_key=True),
        sa.Column("quantity", sa.Integer, nullable=False))
    op.create_table(
        "order_refunds",
        sa.Column("refund_id", sa.String(64), primary_key=True),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("provider_id", sa.String(200)),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False))
    op.create_index("order_refunds_order", "order_refunds", ["order_id"])


def downgrade() -> None:
    for table in ("order_refunds", "order_reservations", "orders", "order_cart_lines",
                  "order_carts", "order_keys", "order_stock"):
        op.drop_table(table)
