"""The GraphQL schema (strawberry): works, their events and stage runs, the sagas, and
the mutations and subscriptions that steer and follow them, assembled here from one
module per family of types:

- :mod:`graphql_api.works`: works, their events and stage runs, the queries on works;
- :mod:`graphql_api.work_mutations`: creating, changing, deleting and steering works;
- :mod:`graphql_api.feed`: the subscriptions that follow the event feed;
- :mod:`graphql_api.sagas`: sagas and their stages, and the mutations on sagas;
- :mod:`graphql_api.rehearsal`: a dry run of a saga (``dryRun``), nothing stored;
- :mod:`graphql_api.workers_types`: workers, and the commands to their worker nodes;
- :mod:`graphql_api.ops`: schedules, locks and services;
- :mod:`graphql_api.results`: the typed errors; :mod:`graphql_api.context`: the
  :class:`Context` of a request, with its DataLoaders.

A family's root fields are resolvers at its module's top level; ``Query``, ``Mutation``
and ``Subscription`` below take them in the order of the checked-in
``schema.graphql``.

Names follow the README's glossary: a saga is a definition, a stage a node of one, a
work a run. Lists are Relay connections with cursors (keyset pages, never offsets);
every work is a ``Node`` with a global id. A mutation answers with a typed payload
or a typed error (``NotFound``, ``WrongState``, ``InvalidInput``, ``Conflict``), never
a bare exception, and nothing stored changes on an error.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry import relay
from strawberry.extensions import (
    MaskErrors,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    SchemaExtension,
    ValidationCache,
)
from strawberry.utils.logging import StrawberryLogger

from . import (
    admin,
    credentials,
    feed,
    logs,
    ops,
    rehearsal,
    sagas,
    work_mutations,
    workers_types,
    works,
)
from .access import ACTION_OF, QUERY_ACTIONS, Authorize
from .audit import AUDITED_ACTIONS, Audited
from .context import Context
from .observability import OperationTimer

__all__ = ["MAX_ALIASES", "MAX_COMPLEXITY", "MAX_DEPTH", "MAX_TOKENS", "Context", "build",
           "complexity", "schema"]

_LOG = logging.getLogger("stepsaga.api")


def _node_field() -> type:
    """A type holding only the Relay ``node`` field, made anew for each schema (its
    field is set up by the schema that takes it, once)."""

    @strawberry.type
    class NodeField:
        node: relay.Node = relay.node()

    return NodeField


@strawberry.type
class QueryFields:
    """The core's queries, but ``node`` (see :func:`query_type`)."""

    all_sagas = sagas.all_sagas
    saga = sagas.saga
    all_stages = sagas.all_stages
    stage = sagas.stage
    aggregate = works.aggregate
    reducers = works.reducers
    deletions = works.deletions
    credentials = credentials.credentials
    principals = admin.principals
    policies = admin.policies
    audit_log = admin.audit_log
    schedules = ops.schedules
    locks = ops.locks
    services = ops.services
    all_workers = workers_types.all_workers
    worker = workers_types.worker
    work = works.work
    all_works = works.all_works
    work_logs = logs.work_logs


def query_type(*extra: type) -> type:
    """The root query type: ``node``, the core's fields, then those of ``extra``."""
    return strawberry.type(type("Query", (_node_field(), QueryFields, *extra), {}))


Query = query_type()


@strawberry.type
class Mutation:
    create_work = work_mutations.create_work
    dry_run = rehearsal.dry_run
    create_saga = sagas.create_saga
    enable_saga = sagas.enable_saga
    disable_saga = sagas.disable_saga
    delete_saga = sagas.delete_saga
    update_work = work_mutations.update_work
    delete_work = work_mutations.delete_work
    update_or_create_work = work_mutations.update_or_create_work
    create_schedule = ops.create_schedule
    update_schedule = ops.update_schedule
    pause_schedule = ops.pause_schedule
    resume_schedule = ops.resume_schedule
    trigger_schedule = ops.trigger_schedule
    delete_schedule = ops.delete_schedule
    add_workers = workers_types.add_workers
    update_workers = workers_types.update_workers
    remove_workers = workers_types.remove_workers
    rewind_work = work_mutations.rewind_work
    pause_work = work_mutations.pause_work
    resume_work = work_mutations.resume_work
    step_work = work_mutations.step_work
    multi_step_work = work_mutations.multi_step_work
    signal_work = work_mutations.signal_work
    cancel_work = work_mutations.cancel_work
    edit_work_state = work_mutations.edit_work_state
    set_breakpoint = work_mutations.set_breakpoint
    clear_breakpoint = work_mutations.clear_breakpoint
    retry_compensation = work_mutations.retry_compensation
    resolve_work = work_mutations.resolve_work
    create_token = credentials.create_token
    revoke_token = credentials.revoke_token
    create_principal = admin.create_principal
    delete_principal = admin.delete_principal
    set_groups = admin.set_groups
    set_policies = admin.set_policies


@strawberry.type
class Subscription:
    workers = workers_types.workers
    service_checks = ops.service_checks
    works = feed.works
    stages = feed.stages
    work_events = feed.work_events


# what a request may be at most
MAX_DEPTH = 12  # fields within fields: a work's stage runs' ... well under it
MAX_ALIASES = 30  # one field asked for under many names: an alias bomb
MAX_TOKENS = 4000  # a document's size in GraphQL tokens
# what answering may cost: a field 1, times the page (``first``) of each list around it
# (a list without ``first``: LIST_GUESS), so a page of works each with a page of its
# events counts both; 1,000 works with their stage runs and 3 events each pass
MAX_COMPLEXITY = 50_000
LIST_GUESS = 10


def _expected(error: GraphQLError) -> bool:
    """Whether an error says what the client did wrong (shown as it is) rather than
    something that broke here (masked: no traceback, SQL or path reaches a client)."""
    from .service import ApiError

    original = error.original_error
    return original is None or isinstance(original, ValueError | ApiError | TimeoutError
                                          | GraphQLError)


class _Schema(strawberry.Schema):
    """strawberry's schema, logging a client's mistakes (a field that does not exist, a
    bad id, a refused input) as one line at debug level: only an error that broke here
    is logged as an error, with its traceback, so a client cannot flood the log."""

    def process_errors(self, errors: list[GraphQLError],
                       execution_context: Any = None) -> None:
        for error in errors:
            if _expected(error):
                _LOG.debug("a request was refused: %s", error.message)
            else:
                StrawberryLogger.error(error, execution_context)


class MaskUnexpected(MaskErrors):
    """Errors that broke here masked for a request from a client (its context names a
    principal); Python in this process sees them as they are."""

    def __init__(self) -> None:
        super().__init__(should_mask_error=self._masks,
                         error_message="the server failed on this request; its log says why")

    def _masks(self, error: GraphQLError) -> bool:
        if getattr(self.execution_context.context, "principal", None) is None:
            return False
        return not _expected(error)


class Complexity(SchemaExtension):
    """An operation whose cost (:data:`MAX_COMPLEXITY`) is over the bound is refused
    before it runs, saying what it would cost."""

    def on_execute(self) -> Iterator[None]:
        document = self.execution_context.graphql_document
        if document is not None:
            found = complexity(document, self.execution_context.variables or {},
                               self.execution_context.operation_name)
            if found > MAX_COMPLEXITY:
                raise GraphQLError(
                    f"the request would cost {found:,} (a field 1, times the page of each "
                    f"list around it), over the bound of {MAX_COMPLEXITY:,}: ask for smaller "
                    "pages or fewer fields", extensions={"code": "too_complex"})
        yield


def complexity(document: Any, variables: Mapping[str, Any],
               operation: str | None = None) -> int:
    """What answering ``document``'s operation may cost (see :data:`MAX_COMPLEXITY`)."""
    from graphql import (
        FieldNode,
        FragmentDefinitionNode,
        FragmentSpreadNode,
        InlineFragmentNode,
        OperationDefinitionNode,
        VariableNode,
        value_from_ast_untyped,
    )

    fragments = {d.name.value: d for d in document.definitions
                 if isinstance(d, FragmentDefinitionNode)}
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)
                  and (operation is None or (d.name is not None and d.name.value == operation))]

    def page(field: Any) -> int:
        for argument in field.arguments or ():
            if argument.name.value in ("first", "maxSteps", "history"):
                value = variables.get(argument.value.name.value) \
                    if isinstance(argument.value, VariableNode) \
                    else value_from_ast_untyped(argument.value)
                if isinstance(value, int) and not isinstance(value, bool):
                    return max(1, value)
        return LIST_GUESS

    def cost(selections: Any, seen: frozenset[str]) -> int:
        total = 0
        for node in selections or ():
            if isinstance(node, FieldNode):
                inner = node.selection_set.selections if node.selection_set else ()
                if not inner:
                    total += 1
                    continue
                below = cost(inner, seen)
                listed = any(a.name.value in ("first", "maxSteps", "history")
                             for a in node.arguments or ())
                total += 1 + (page(node) if listed or _listed(node) else 1) * below
            elif isinstance(node, InlineFragmentNode):
                total += cost(node.selection_set.selections, seen)
            elif isinstance(node, FragmentSpreadNode):
                name = node.name.value
                if name in fragments and name not in seen:
                    total += cost(fragments[name].selection_set.selections, seen | {name})
        return total

    return max((cost(o.selection_set.selections, frozenset()) for o in operations),
               default=0)


# fields that answer a list without a page argument (each counts LIST_GUESS)
_LISTS = frozenset({"stageRuns", "allWorkers", "allSagas", "allStages", "stages",
                    "schedules", "services", "pendingCommands", "children", "principals",
                    "credentials", "entries", "aggregate", "checks", "holders", "waiters"})


def _listed(node: Any) -> bool:
    return str(node.name.value) in _LISTS


class Introspection(SchemaExtension):
    """Introspection refused when the request's context says so (the server's, unless
    its explorer is on)."""

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context.context
        document = self.execution_context.graphql_document
        if not getattr(context, "introspection", True) and document is not None \
                and any(name in ("__schema", "__type") for name in _field_names(document)):
            raise GraphQLError("introspection is off on this server (start it with "
                               "--explorer to turn it on); the schema is in its docs")
        yield


def _field_names(document: Any) -> Iterator[str]:
    from graphql import FieldNode, visit
    from graphql.language import Visitor

    names: list[str] = []

    class Names(Visitor):
        def enter_field(self, node: FieldNode, *args: Any) -> None:
            names.append(node.name.value)

    visit(document, Names())
    yield from names


def build(*, query: type = Query, mutation: type = Mutation,
          subscription: type = Subscription, types: Sequence[type] = (),
          actions: Mapping[str, str] | None = None,
          anonymous: frozenset[str] = frozenset(),
          own: frozenset[str] = frozenset()) -> strawberry.Schema:
    """A schema with these root types (the core's, or theirs merged with a pack's:
    graphql_api.extensions.schema_for), each field needing its action (``actions``:
    the core's by default), ``anonymous`` callable before signing in and ``own`` by
    anyone signed in (a principal's own account); the mutations that are operator
    actions recorded in the audit log."""
    actions = {**ACTION_OF, **QUERY_ACTIONS} if actions is None else actions
    _audit(mutation, actions, anonymous | own)
    from strawberry.scalars import JSON

    from .redaction import JSON_SHOWN

    return _Schema(
        query=query, mutation=mutation, subscription=subscription,
        scalar_overrides={JSON: JSON_SHOWN},  # secrets shown as the client may see them
        types=[works.Work, workers_types.Worker, sagas.Saga, sagas.StageInfo, *types],
        # bounds on every request (generous for people and scripts, tight for a bomb);
        # a document is parsed and validated once, not per request (factories: each
        # request gets its own, the caches are shared at module level by strawberry)
        extensions=[lambda: QueryDepthLimiter(max_depth=MAX_DEPTH),
                    lambda: MaxAliasesLimiter(max_alias_count=MAX_ALIASES),
                    lambda: MaxTokensLimiter(max_token_count=MAX_TOKENS), Complexity,
                    MaskUnexpected, Introspection,
                    lambda: Authorize(actions=actions, anonymous=anonymous, own=own),
                    lambda: ParserCache(maxsize=512), lambda: ValidationCache(maxsize=512),
                    OperationTimer])  # stepsaga_api_request_seconds


def _audit(mutation: type, actions: Mapping[str, str], anonymous: frozenset[str]) -> None:
    """:class:`graphql_api.audit.Audited` on each mutation that is an operator action
    (once: a field is shared by the schemas built with it)."""
    from strawberry.utils.str_converters import to_camel_case

    for f in mutation.__strawberry_definition__.fields:  # type: ignore[attr-defined]
        name = f.graphql_name or to_camel_case(f.python_name)
        action = actions.get(name, "admin")
        if name in anonymous or action not in AUDITED_ACTIONS or \
                any(isinstance(e, Audited) for e in f.extensions):
            continue
        if not f.is_async:
            raise ValueError(f"mutation {name!r} is an operator action ({action}): it is "
                             "recorded in the audit log, so it must be async")
        f.extensions.append(Audited(name))


schema = build()
