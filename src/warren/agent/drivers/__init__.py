"""Drivers run tasks: ``fake`` (behaviour set through the task's env, for tests) and ``process``
(a child process per task). Each implements ``warren.ports.Driver``."""

from .fake import FakeDriver
from .process import LogRotation, ProcessDriver

__all__ = ["FakeDriver", "LogRotation", "ProcessDriver"]
