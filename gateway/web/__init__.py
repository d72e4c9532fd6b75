"""aiohttp edges of the gateway: the worker WebSocket endpoint."""

from gateway.web.worker_ws import WorkerConnection, WorkerHub

__all__ = ["WorkerConnection", "WorkerHub"]
