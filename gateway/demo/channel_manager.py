"""A simulated channel manager: the kind of integration `api_clients:` is for.

It calls the PMS's API the way such services do (every few minutes, from a fixed host,
with a bearer token): read availability and reservations, push a status change. Given
the gateway's URL and a gateway token (`pms-gateway api-clients add channel-manager`), it
shows that an integration works through the gateway without a person or a second factor.

    python -m gateway.demo.channel_manager http://127.0.0.1:8080 pgw_...
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass

import aiohttp


@dataclass
class SyncResult:
    rooms: int
    reservations: int
    confirmed: int | None  # the reservation whose status was pushed


async def synchronise(base_url: str, token: str, client: aiohttp.ClientSession) -> SyncResult:
    """One synchronisation round; raises `aiohttp.ClientResponseError` on a refusal."""
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    async with client.get(base_url + "/api/v1/availability", headers=headers) as response:
        response.raise_for_status()
        availability = await response.json()
    async with client.get(base_url + "/api/v1/reservations", headers=headers) as response:
        response.raise_for_status()
        reservations = await response.json()
    new = next((r["id"] for r in reservations if r["status"] == "New"), None)
    if new is not None:
        async with client.post(
            f"{base_url}/api/v1/reservations/{new}/status", headers=headers, json={"status": "Confirmed"}
        ) as response:
            response.raise_for_status()
    return SyncResult(availability["rooms"], len(reservations), new)


async def _main(base_url: str, token: str) -> None:
    async with aiohttp.ClientSession() as client:
        result = await synchronise(base_url.rstrip("/"), token, client)
    print(json.dumps(result.__dict__))


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], sys.argv[2]))
