"""aiohttp edges of the gateway: the worker WebSocket endpoint."""

from gateway.web.worker_connection import WorkerConnection
from gateway.web.worker_ws import WorkerHub

__all__ = ["WorkerConnection", "WorkerHub"]
