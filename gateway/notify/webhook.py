"""The signed alerts webhook: JSON POSTed to `alerts_webhook.url`, with
`X-Gateway-Signature: sha256=<hex HMAC-SHA256 of the body under alerts_webhook.secret>` so
the receiver can tell it came from this gateway (compare in constant time)."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import aiohttp

from gateway.config import AlertsWebhookSettings

SIGNATURE_HEADER = "X-Gateway-Signature"


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookSender:
    def __init__(self, settings: AlertsWebhookSettings) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None

    @property
    def configured(self) -> bool:
        return self.settings.url is not None

    async def post(self, payload: dict[str, Any]) -> None:
        """Raises on network errors and non-2xx answers."""
        if self.settings.url is None:
            return
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.settings.timeout))
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "X-Gateway-Event": str(payload.get("event", ""))}
        if self.settings.secret:
            headers[SIGNATURE_HEADER] = signature(self.settings.secret, body)
        async with self._session.post(self.settings.url, data=body, headers=headers) as response:
            if response.status >= 300:
                raise RuntimeError(f"webhook answered {response.status}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
