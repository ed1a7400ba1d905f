"""The worker side: the agent that runs a node's tasks through a driver, probes their health, and
reports their observed state. Must not import control, api, ingress or the CLI."""

from .dispatching import StoreDispatcher
from .drivers import FakeDriver, LogRotation, ProcessDriver
from .fencing import LeaseWatch
from .probing import NetworkProber
from .supervising import Agent

__all__ = [
    "Agent",
    "FakeDriver",
    "LeaseWatch",
    "LogRotation",
    "NetworkProber",
    "ProcessDriver",
    "StoreDispatcher",
]
