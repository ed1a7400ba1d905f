"""Pure, frozen data: specs, revisions, tasks, nodes, events, errors. No I/O, no clock reads."""

from .durations import format_duration, parse_duration
from .errors import (
    AuthError,
    CompactedError,
    ConflictError,
    DriverError,
    InvalidTransitionError,
    NotFoundError,
    StoreError,
    UnavailableError,
    ValidationError,
    WarrenError,
)
from .events import Event, Level
from .nodes import Node, NodeAvailability, NodeStatus
from .services import Revision, Service
from .specs import ServiceSpec, service_from_document, service_to_document
from .tasks import DesiredState, Task, TaskState

__all__ = [
    "AuthError",
    "CompactedError",
    "ConflictError",
    "DesiredState",
    "DriverError",
    "Event",
    "InvalidTransitionError",
    "Level",
    "Node",
    "NodeAvailability",
    "NodeStatus",
    "NotFoundError",
    "Revision",
    "Service",
    "ServiceSpec",
    "StoreError",
    "Task",
    "TaskState",
    "UnavailableError",
    "ValidationError",
    "WarrenError",
    "format_duration",
    "parse_duration",
    "service_from_document",
    "service_to_document",
]
