"""stepsaga's engine: the saga model, the rules, stepping and breakpoints.

Define sagas from :class:`Stage` and the composites, run them with a
:class:`Runtime`, step them, and read their events. See ``README.md``.
"""

from __future__ import annotations

from .breakpoints import Breakpoint
from .clock import Clock, ManualClock, SystemClock
from .commands import Command, command_events
from .context import Failure, StageContext
from .definitions import (
    MISSING,
    Abort,
    Branch,
    Forward,
    Guard,
    Loop,
    Map,
    Observer,
    Parallel,
    RetryTransaction,
    Saga,
    SagaRef,
    Sleep,
    Stage,
    Wait,
)
from .errors import (
    CompensationResultError,
    ConflictError,
    CorruptEventError,
    DefinitionError,
    DefinitionMismatchError,
    EngineError,
    ExpressionError,
    InterruptedCall,
    LeaseLostError,
    OutputError,
    RetryPolicyError,
    SagaDisabledError,
    SchemaTooNewError,
    ServiceError,
    StageFailure,
    StageTimeoutError,
    StoreError,
    UnknownSagaError,
    UnknownWorkError,
    WorkStateError,
)
from .events import Event, RecordedEvent
from .expressions import Expression, parse_expression
from .plan import Plan, compile_saga
from .registry import Functions
from .retry import RetryPolicy
from .runner import DryRun, StepReport, WorkRunner
from .runtime import Runtime, WorkResult
from .sagadata import saga_from_data
from .services import Service, ServiceScope
from .state import StageState, WorkState, apply, replay
from .stepping import Call, Emit, ScheduleRetry, decide

__all__ = [
    "MISSING",
    "Abort",
    "Branch",
    "Breakpoint",
    "Call",
    "Clock",
    "Command",
    "CompensationResultError",
    "ConflictError",
    "CorruptEventError",
    "DefinitionError",
    "DefinitionMismatchError",
    "DryRun",
    "Emit",
    "EngineError",
    "Event",
    "Expression",
    "ExpressionError",
    "Failure",
    "Forward",
    "Functions",
    "Guard",
    "InterruptedCall",
    "LeaseLostError",
    "Loop",
    "ManualClock",
    "Map",
    "Observer",
    "OutputError",
    "Parallel",
    "Plan",
    "RecordedEvent",
    "RetryPolicy",
    "RetryPolicyError",
    "RetryTransaction",
    "Runtime",
    "Saga",
    "SagaDisabledError",
    "SagaRef",
    "ScheduleRetry",
    "SchemaTooNewError",
    "Service",
    "ServiceError",
    "ServiceScope",
    "Sleep",
    "Stage",
    "StageContext",
    "StageFailure",
    "StageState",
    "StageTimeoutError",
    "StepReport",
    "StoreError",
    "SystemClock",
    "UnknownSagaError",
    "UnknownWorkError",
    "Wait",
    "WorkResult",
    "WorkRunner",
    "WorkState",
    "WorkStateError",
    "apply",
    "command_events",
    "compile_saga",
    "decide",
    "parse_expression",
    "replay",
    "saga_from_data",
]
