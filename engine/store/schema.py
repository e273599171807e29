"""The store's tables (SQLAlchemy Core), the same on SQLite and PostgreSQL.

``events`` is the truth: append-only, keyed by ``(work_id, seq)`` with a global
``position`` for ordered reading. ``works`` and ``stage_runs`` are projections,
written in the same transaction as the events they derive from and rebuildable
from the events alone. ``snapshots`` hold a work's state at some seq so loading a
long work costs only the events after it.

``commands`` is the inbox of steering requests (see :mod:`engine.store.inbox`).

``leases`` hold the unfinished works that worker nodes run: free ones (created for
the nodes, or handed back by a draining node) and claimed ones, with the node that
runs it, until when (renewed by heartbeat), and a token that grows at every claim.
A work run by a plain runtime of its own has no row. ``workers`` is the
projection of ``worker_events``: the named workers of every node, their
concurrency and state. A lease row also holds the hash and version of the definition
its work started on, so a node claims only the works its definitions continue.

``catalog`` is what each worker node runs: one row per (node, saga) with the
description of its definition (:func:`engine.catalog.describe`), its hash and
version, written when the node starts, renewed by its heartbeat, deleted when it
stops (see :mod:`engine.store.catalog`).

The ``order_*`` tables and ``orders`` are the orders pack's (workers.actions.orders):
stock on hand, the pool of keys for digital goods (each drawn by one order at most),
carts and their lines, orders with what each reserved, and refunds.

``sagas`` holds the sagas given as data (their JSON, :mod:`engine.sagadata`) and which
sagas are disabled, those registered in code too (a row without data): who changed
each and when, and a version that grows at every change (see
:mod:`engine.store.sagas`).
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = ["audit", "catalog", "commands", "deletions", "events", "health_checks", "leases",
           "lock_holders", "lock_waiters", "messaging_channels", "metadata",
           "order_cart_lines", "order_carts", "order_keys", "order_refunds",
           "order_reservations", "order_stock", "orders", "quota_charges", "rate_buckets",
           "sagas", "schedules", "snapshots", "stage_runs", "worker_events", "workers",
           "works"]

metadata = sa.MetaData()

_ID = sa.String(64)
# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL needs a 64-bit identity
_POSITION = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

events = sa.Table(
    "events", metadata,
    sa.Column("position", _POSITION, primary_key=True, autoincrement=True),
    sa.Column("work_id", _ID, nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("type", sa.String(80), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("payload", sa.Text, nullable=False),  # JSON text: byte-exact on both databases
    sa.Column("time", sa.Float(precision=53), nullable=False),
    sa.Column("worker", sa.String(200)),
    sa.UniqueConstraint("work_id", "seq", name="events_work_seq"),
    # positions are never handed out twice, even after a deletion (engine.store.deletion)
    sqlite_autoincrement=True,
)

works = sa.Table(
    "works", metadata,
    sa.Column("work_id", _ID, primary_key=True),
    sa.Column("saga", sa.String(200), nullable=False),
    sa.Column("status", sa.String(40), nullable=False),
    sa.Column("paused", sa.Boolean, nullable=False),
    sa.Column("phase", sa.String(20), nullable=False),
    sa.Column("input", sa.Text),
    sa.Column("output", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("failure", sa.Text),
    sa.Column("current_stage", sa.Text),
    sa.Column("stages_done", sa.Integer, nullable=False),
    sa.Column("stages_total", sa.Integer, nullable=False),
    sa.Column("breakpoints", sa.Text, nullable=False),
    sa.Column("last_seq", sa.Integer, nullable=False),
    sa.Column("wake_at", sa.Float(precision=53)),
    sa.Column("parent_work_id", _ID),
    sa.Column("forked_at_seq", sa.Integer),
    sa.Column("waiting", sa.Text),  # JSON {stage path: why its call waits}, or NULL
    sa.Column("created_at", sa.Float(precision=53), nullable=False),
    sa.Column("updated_at", sa.Float(precision=53), nullable=False),
    sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
    sa.Column("started_at", sa.Float(precision=53)),
    sa.Column("finished_at", sa.Float(precision=53)),
    sa.Column("duration", sa.Float(precision=53)),  # from creation to end, seconds
    sa.Column("error_type", sa.String(200)),  # the type of the error that ended it
    sa.Column("worker", sa.String(200)),  # the worker of its latest event
    sa.Column("node", sa.String(200)),  # that worker's node
    sa.Column("definition", sa.String(64)),  # the hash of the definition it started on
    sa.Column("definition_version", sa.Integer),  # and that definition's version
    # the number of the last inbox command it took: the ones above are pending
    sa.Column("commands_applied", sa.Integer, nullable=False, server_default="0"),
    sa.Index("works_created", "created_at", "work_id"),
    sa.Index("works_saga_created", "saga", "created_at", "work_id"),
    sa.Index("works_saga_status_created", "saga", "status", "created_at", "work_id"),
    sa.Index("works_status_created", "status", "created_at", "work_id"),
)

stage_runs = sa.Table(
    "stage_runs", metadata,
    sa.Column("work_id", _ID, primary_key=True),
    sa.Column("path", sa.Text, primary_key=True),
    sa.Column("status", sa.String(40), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("started_at", sa.Float(precision=53)),
    sa.Column("finished_at", sa.Float(precision=53)),
    sa.Column("duration", sa.Float(precision=53)),
    sa.Column("error", sa.Text),
    sa.Column("saga", sa.String(200), nullable=False, server_default=""),
    sa.Column("template", sa.Text, nullable=False, server_default=""),  # pack[*]/box
    sa.Index("stage_runs_template", "saga", "template"),
)

snapshots = sa.Table(
    "snapshots", metadata,
    sa.Column("work_id", _ID, primary_key=True),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
)

leases = sa.Table(
    "leases", metadata,
    sa.Column("work_id", _ID, primary_key=True),
    sa.Column("saga", sa.String(200), nullable=False),
    sa.Column("priority", sa.Integer, nullable=False),  # higher first
    sa.Column("owner", sa.String(200)),  # the worker node; NULL: free to claim
    sa.Column("worker", sa.String(200)),  # its named worker
    sa.Column("token", sa.Integer, nullable=False),  # +1 at every claim
    # 0: free; a delayed work is free from its start time on
    sa.Column("expires_at", sa.Float(precision=53), nullable=False),
    sa.Column("claimed_at", sa.Float(precision=53)),
    # why a free work is not claimed yet (its saga is at its concurrency limit), or NULL
    sa.Column("waiting", sa.Text),
    # the number of the last command sent to the work (engine.store.inbox): a lease handed
    # back while a command it did not take waits is free at once
    sa.Column("mail", sa.Integer, nullable=False, server_default="0"),
    # the definition the work started on (its hash and version), or NULL: unknown (a row
    # written before these columns, or by a plain runtime's recover())
    sa.Column("definition", sa.String(64)),
    sa.Column("definition_version", sa.Integer),
    sa.Index("leases_expires", "expires_at"),
    sa.Index("leases_owner", "owner"),
    # the free rows by start time: an idle node sleeps until the next delayed work is due
    sa.Index("leases_due", "expires_at", postgresql_where=sa.text("owner IS NULL"),
             sqlite_where=sa.text("owner IS NULL")),
    sa.Index("leases_waiting", "saga", postgresql_where=sa.text("waiting IS NOT NULL"),
             sqlite_where=sa.text("waiting IS NOT NULL")),
)

commands = sa.Table(  # the inbox: what others ask of a work its leaseholder alone records
    "commands", metadata,
    sa.Column("position", _POSITION, primary_key=True, autoincrement=True),
    sa.Column("work_id", _ID, nullable=False),
    sa.Column("number", sa.Integer, nullable=False),  # 1, 2, ... per work
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("sender", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("args", sa.Text, nullable=False),  # JSON object
    sa.Column("request_id", sa.String(200)),  # makes a retried request idempotent
    sa.Column("sent_at", sa.Float(precision=53), nullable=False),
    sa.UniqueConstraint("work_id", "number", name="commands_work_number"),
    sa.UniqueConstraint("request_id", name="commands_request"),
)

worker_events = sa.Table(
    "worker_events", metadata,
    sa.Column("position", _POSITION, primary_key=True, autoincrement=True),
    sa.Column("worker_id", sa.String(200), nullable=False),
    sa.Column("type", sa.String(80), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("time", sa.Float(precision=53), nullable=False),
    sa.Index("worker_events_worker", "worker_id"),
)

workers = sa.Table(
    "workers", metadata,
    sa.Column("worker_id", sa.String(200), primary_key=True),  # node/name
    sa.Column("node", sa.String(200), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),  # active, draining, removed
    sa.Column("concurrency", sa.Integer, nullable=False),
    sa.Column("sagas", sa.Text),  # JSON list of saga names, or NULL for all
    sa.Column("host", sa.String(200), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("running", sa.Integer, nullable=False),
    sa.Column("registered_at", sa.Float(precision=53), nullable=False),
    sa.Column("heartbeat_at", sa.Float(precision=53), nullable=False),
    sa.Column("updated_at", sa.Float(precision=53), nullable=False),
)

schedules = sa.Table(
    "schedules", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("saga", sa.String(200), nullable=False),
    sa.Column("input", sa.Text, nullable=False),  # JSON
    sa.Column("cron", sa.String(200), nullable=False),
    sa.Column("timezone", sa.String(64), nullable=False),
    sa.Column("overlap", sa.String(10), nullable=False),  # skip, queue, allow
    sa.Column("catch_up", sa.String(10), nullable=False),  # last, none
    sa.Column("paused", sa.Boolean, nullable=False),
    sa.Column("next_at", sa.Float(precision=53), nullable=False),  # the next tick
    sa.Column("queued", sa.Text, nullable=False),  # JSON list of ticks waiting (queue)
    sa.Column("last_tick", sa.Float(precision=53)),
    sa.Column("last_work_id", _ID),
    sa.Column("fired", sa.Integer, nullable=False),  # works created so far
    sa.Column("version", sa.Integer, nullable=False),  # +1 at every change: compare-and-set
    sa.Column("created_at", sa.Float(precision=53), nullable=False),
    sa.Column("updated_at", sa.Float(precision=53), nullable=False),
)

lock_holders = sa.Table(  # a named lock held by up to its limit of holders at once
    "lock_holders", metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("holder", sa.String(200), primary_key=True),
    sa.Column("acquired_at", sa.Float(precision=53), nullable=False),
    sa.Column("expires_at", sa.Float(precision=53), nullable=False),
)

lock_waiters = sa.Table(  # first come, first served: by position
    "lock_waiters", metadata,
    sa.Column("position", _POSITION, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("holder", sa.String(200), nullable=False),
    sa.Column("since", sa.Float(precision=53), nullable=False),
    sa.Column("expires_at", sa.Float(precision=53), nullable=False),  # a dead waiter leaves
    sa.Index("lock_waiters_name", "name", "position"),
)

rate_buckets = sa.Table(  # token buckets shared by every node
    "rate_buckets", metadata,
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("tokens", sa.Float(precision=53), nullable=False),
    sa.Column("updated_at", sa.Float(precision=53), nullable=False),
)

health_checks = sa.Table(  # the history of service health checks
    "health_checks", metadata,
    sa.Column("position", _POSITION, primary_key=True, autoincrement=True),
    sa.Column("service", sa.String(200), nullable=False),
    sa.Column("ok", sa.Boolean, nullable=False),
    sa.Column("available", sa.Boolean, nullable=False),  # its own check and its dependencies
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("node", sa.String(200), nullable=False),
    sa.Column("time", sa.Float(precision=53), nullable=False),
    sa.Column("depends_on", sa.Text),  # JSON list of service names; NULL before 0012
    sa.Index("health_checks_service", "service", "position"),
)

catalog = sa.Table(  # the definitions each live worker node runs
    "catalog", metadata,
    sa.Column("node", sa.String(200), primary_key=True),
    sa.Column("saga", sa.String(200), primary_key=True),
    sa.Column("definition", sa.String(64), nullable=False),  # the hash
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("description", sa.Text, nullable=False),  # JSON: engine.catalog.describe
    sa.Column("published_at", sa.Float(precision=53), nullable=False),
    sa.Column("seen_at", sa.Float(precision=53), nullable=False),  # the node's last beat
    sa.Column("expires_at", sa.Float(precision=53), nullable=False),  # gone after this
)

deletions = sa.Table(  # the audit of deleted works: it outlives them
    "deletions", metadata,
    sa.Column("position", _POSITION, primary_key=True, autoincrement=True),
    sa.Column("work_id", _ID, nullable=False),
    sa.Column("saga", sa.String(200), nullable=False),
    sa.Column("status", sa.String(40), nullable=False),
    sa.Column("events", sa.Integer, nullable=False),
    sa.Column("deleted_by", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("deleted_at", sa.Float(precision=53), nullable=False),
    sa.Index("deletions_work", "work_id"),
)

sagas = sa.Table(  # sagas given as data, and which sagas (data or code) are disabled
    "sagas", metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("data", sa.Text),  # JSON (engine.sagadata); NULL: a saga registered in code
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),  # 1, then +1 at every change
    sa.Column("disabled_by", sa.String(200)),  # who disabled it, when, why (NULL: enabled)
    sa.Column("disabled_at", sa.Float(precision=53)),
    sa.Column("disabled_reason", sa.Text),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("created_at", sa.Float(precision=53), nullable=False),
    sa.Column("updated_by", sa.String(200), nullable=False),
    # grows at every change, across rows: nodes poll its maximum (and the count of rows)
    sa.Column("updated_at", sa.Float(precision=53), nullable=False),
)

# People and machines, one model for the whole product (the security issue and the users
# pack): a principal in groups, API tokens and browser sessions held by principals, and
# the deployment's own settings (its id, which a token names).
principals = sa.Table(
    "principals", metadata,
    sa.Column("principal_id", sa.String(40), primary_key=True),
    sa.Column("kind", sa.String(20), nullable=False),  # person or service
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("email", sa.String(320)),
    sa.Column("created_at", sa.Float(precision=53), nullable=False),
    sa.Column("disabled_at", sa.Float(precision=53)),  # NULL: may sign in
    # a user of the users pack (a person who signs in with a password): see
    # workers.actions.users.accounts; a service or an operator made by stepsaga has none
    sa.Column("phone", sa.String(32)),  # E.164, once given
    sa.Column("password_hash", sa.String(255)),  # argon2id, PHC string; NULL: none
    sa.Column("state", sa.String(20), nullable=False, server_default="active"),
    sa.Column("updated_at", sa.Float(precision=53)),
    sa.Column("confirmed_at", sa.Float(precision=53)),  # the email confirmed
    sa.Column("phone_confirmed_at", sa.Float(precision=53)),
)

group_members = sa.Table(
    "group_members", metadata,
    sa.Column("group_name", sa.String(200), primary_key=True),
    sa.Column("principal_id", sa.String(40), sa.ForeignKey("principals.principal_id",
                                                           ondelete="CASCADE"),
              primary_key=True),
    sa.Index("group_members_principal", "principal_id"),
)

credentials = sa.Table(  # API tokens and sessions: a secret known only by its hash
    "credentials", metadata,
    sa.Column("credential_id", sa.String(40), primary_key=True),
    sa.Column("kind", sa.String(20), nullable=False),  # token, session or link (one-time)
    sa.Column("principal_id", sa.String(40), sa.ForeignKey("principals.principal_id",
                                                           ondelete="CASCADE"),
              nullable=False),
    sa.Column("secret_hash", sa.String(64), nullable=False),  # sha256 hex
    sa.Column("label", sa.String(200), nullable=False),
    sa.Column("created_at", sa.Float(precision=53), nullable=False),
    sa.Column("expires_at", sa.Float(precision=53), nullable=False),
    sa.Column("revoked_at", sa.Float(precision=53)),  # NULL: live until it expires
    sa.Column("csrf_hash", sa.String(64)),  # a session's CSRF token, hashed
    sa.Index("credentials_principal", "principal_id", "kind"),
)

settings = sa.Table(  # the deployment's own values: its id, ...
    "settings", metadata,
    sa.Column("key", sa.String(100), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

audit = sa.Table(  # every operator action: who, what, on what, why (engine.store.audit)
    "audit", metadata,
    sa.Column("position", _POSITION, primary_key=True, autoincrement=True),
    sa.Column("time", sa.Float(precision=53), nullable=False),
    sa.Column("principal", sa.String(200), nullable=False),
    sa.Column("action", sa.String(100), nullable=False),  # pauseWork, setPolicies, ...
    sa.Column("target_kind", sa.String(40), nullable=False),  # work, saga, schedule, ...
    sa.Column("target", sa.String(400), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("details", sa.Text, nullable=False),  # JSON: the request's plain arguments
    sa.Index("audit_target", "target_kind", "target", "position"),
    sa.Index("audit_principal", "principal", "position"),
)

quota_charges = sa.Table(  # a work a quota was charged for, till it ends (graphql_api.limits)
    "quota_charges", metadata,
    sa.Column("work_id", _ID, primary_key=True),
    sa.Column("key", sa.String(200), primary_key=True),  # the quota's bucket (rate_buckets)
    sa.Column("rate", sa.Float(precision=53), nullable=False),  # its limit when charged
    sa.Column("burst", sa.Float(precision=53), nullable=False),
    sa.Column("principal", sa.String(200), nullable=False),  # who was charged
    sa.Column("charged_at", sa.Float(precision=53), nullable=False),
)

work_logs = sa.Table(  # what stage code logged through ctx.logger (engine.worklogs)
    "work_logs", metadata,
    sa.Column("position", _POSITION, primary_key=True, autoincrement=True),
    sa.Column("work_id", _ID, nullable=False),
    sa.Column("time", sa.Float(precision=53), nullable=False),
    sa.Column("level", sa.String(10), nullable=False),  # DEBUG, INFO, WARNING, ERROR, ...
    sa.Column("logger", sa.String(200), nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("node", sa.String(200)),  # the worker that ran the stage
    sa.Index("work_logs_work", "work_id", "position"),
)

# the orders pack's tables (workers.actions.orders.ledger); amounts are whole numbers of
# the currency's smallest unit (cents), as the payment provider takes them
order_stock = sa.Table(  # physical goods on hand, less what open orders reserved
    "order_stock", metadata,
    sa.Column("sku", sa.String(64), primary_key=True),
    sa.Column("on_hand", sa.Integer, nullable=False),
)

order_keys = sa.Table(  # the pool of keys of digital goods: each drawn by one order
    "order_keys", metadata,
    sa.Column("key_id", _POSITION, primary_key=True, autoincrement=True),
    sa.Column("sku", sa.String(64), nullable=False),
    sa.Column("code", sa.Text, nullable=False),
    sa.Column("added_at", sa.Float(precision=53), nullable=False),
    sa.Column("order_id", sa.String(64)),  # NULL: free
    sa.Column("issued_at", sa.Float(precision=53)),  # NULL: reserved, not given yet
    sa.Column("revoked_at", sa.Float(precision=53)),  # given, then taken back: never reused
    sa.UniqueConstraint("sku", "code", name="order_keys_code"),
    sa.Index("order_keys_free", "sku", "order_id", "key_id"),
)

order_carts = sa.Table(
    "order_carts", metadata,
    sa.Column("cart_id", sa.String(40), primary_key=True),
    sa.Column("owner", sa.String(200), nullable=False),  # the principal that made it
    sa.Column("created_at", sa.Float(precision=53), nullable=False),
    sa.Column("updated_at", sa.Float(precision=53), nullable=False),
    sa.Column("order_id", sa.String(64)),  # NULL: open; else the order placed from it
)

order_cart_lines = sa.Table(
    "order_cart_lines", metadata,
    sa.Column("cart_id", sa.String(40), sa.ForeignKey("order_carts.cart_id",
                                                      ondelete="CASCADE"),
              primary_key=True),
    sa.Column("sku", sa.String(64), primary_key=True),
    sa.Column("quantity", sa.Integer, nullable=False),
)

orders = sa.Table(
    "orders", metadata,
    sa.Column("order_id", sa.String(64), primary_key=True),
    sa.Column("work_id", _ID, nullable=False),  # the orders.place work
    sa.Column("cart_id", sa.String(40)),
    sa.Column("owner", sa.String(200), nullable=False),
    sa.Column("email", sa.String(320), nullable=False),
    # placed, paid, completed, failed, refunded (whole), partially_refunded
    sa.Column("status", sa.String(30), nullable=False),
    sa.Column("lines", sa.Text, nullable=False),  # JSON [{sku, name, quantity, price}]
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("payment_intent", sa.String(200)),
    sa.Column("refunded", sa.BigInteger, nullable=False),  # succeeded refunds' total
    sa.Column("created_at", sa.Float(precision=53), nullable=False),
    sa.Column("updated_at", sa.Float(precision=53), nullable=False),
    sa.Index("orders_owner", "owner", "created_at"),
)

order_reservations = sa.Table(  # the stock an order holds until it completes or fails
    "order_reservations", metadata,
    sa.Column("order_id", sa.String(64), primary_key=True),
    sa.Column("sku", sa.String(64), primary_key=True),
    sa.Column("quantity", sa.Integer, nullable=False),
)

order_refunds = sa.Table(
    "order_refunds", metadata,
    sa.Column("refund_id", sa.String(64), primary_key=True),  # the orders.refund work's
    sa.Column("order_id", sa.String(64), nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    # pending (its amount held against the charge), succeeded or failed
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("provider_id", sa.String(200)),  # the provider's refund id
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float(precision=53), nullable=False),
    sa.Column("updated_at", sa.Float(precision=53), nullable=False),
    sa.Index("order_refunds_order", "order_id"),
)

messaging_channels = sa.Table(  # the messaging pack's channels (workers.actions.messaging)
    "messaging_channels", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(20), nullable=False),  # email, sms, chat
    sa.Column("senders", sa.Text, nullable=False),  # JSON list of [messaging.senders] names
    sa.Column("state", sa.String(20), nullable=False),  # active, paused, deleted
    # messages handed to a sender so far: +1 in one statement per message, so every node
    # takes the next sender in turn (round robin across nodes)
    sa.Column("turns", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("changed_by", sa.String(200), nullable=False, server_default=""),
    sa.Column("created_at", sa.Float(precision=53), nullable=False),
    sa.Column("updated_at", sa.Float(precision=53), nullable=False),
)
