"""Noticing users deactivated in the database by another process.

With Redis, `users deactivate` ends the sessions itself through the shared store. With the
in-process memory store, the CLI cannot reach a running gateway's sessions, so the gateway
looks for deactivated users every few seconds and ends their sessions (and the PMS
sessions behind them).
"""

from __future__ import annotations

import asyncio

import structlog

from gateway.proxy.exchange import Addon
from gateway.sessions.manager import SessionManager

log = structlog.get_logger("gateway.sessions")


class DeactivationWatcher(Addon):
    def __init__(self, users, sessions: SessionManager, interval: float = 5.0) -> None:
        self.users = users
        self.sessions = sessions
        self.interval = interval
        self._task: asyncio.Task | None = None

    async def startup(self) -> None:
        self._task = asyncio.create_task(self._watch())

    async def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def check_once(self) -> int:
        ended = 0
        for user in await self.users.list():
            if not user.active and await self.sessions.store.set_members("user-sess:" + user.name):
                ended += await self.sessions.end_user(user.name, "deactivated")
        return ended

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check_once()
            except Exception:
                log.exception("deactivation check failed")
