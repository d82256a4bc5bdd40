"""Offline Azure Functions host for Python v2 apps with Durable Functions (generic, app-agnostic).

Public API: EmbeddedHost, VirtualClock, RealClock; `python -m embedded --app-dir DIR`.
"""

from .clock import Clock, RealClock, VirtualClock
from .host import EmbeddedHost
from .workerindex import WorkerRefusedApp

__all__ = ["Clock", "EmbeddedHost", "RealClock", "VirtualClock", "WorkerRefusedApp"]
