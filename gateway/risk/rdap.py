"""The owner of a login address by RDAP, looked up in the background, never on the login's path.

The GeoLite2-ASN file misses addresses, and names an AS, not the customer a block is
registered to; the registries' RDAP services know. But asking them on the login's path
would make every login wait for a registry on the internet (and fail with it), so:

- `schedule(ip)` starts a lookup and returns at once; the login goes on. What the lookup
  finds is in the ephemeral store for a day (`rdap:<network>`), where the captcha gate
  and the login history read it: the *next* login from that address is judged with it.
- At most `risk.rdap_concurrency` lookups run at once (a semaphore); a few hundred more
  may wait their turn, beyond that a lookup is skipped (the next login asks again). One
  address is looked up once at a time, across requests of this process.
- A failed lookup (unreachable, slow past `risk.rdap_timeout`, not JSON, no record) is
  remembered for FAILURE_TTL, so an outage is not hammered at every login.
- `risk.rdap: false` turns it off: registries then learn nothing of which addresses
  staff use.

The answer is fetched with aiohttp from `risk.rdap_url` (`<url>/ip/<address>`; rdap.org
redirects to the registry that holds the address) and parsed by `ipwhois`'s RDAP reader,
given the response so it fetches nothing itself.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import structlog

from gateway.policy.schema import Policy
from gateway.risk.geoip import is_public_address, parse_address
from gateway.risk.networks import client_key
from gateway.store.base import EphemeralStore

log = structlog.get_logger("gateway.rdap")

CACHE_TTL = 24 * 3600.0
FAILURE_TTL = 300.0
MAX_WAITING = 256
MAX_ANSWER = 512 * 1024  # bytes; RDAP answers are a few kilobytes


def cache_key(ip: str, policy: Policy) -> str:
    return f"rdap:{client_key(ip, policy)}"


async def cached_names(store: EphemeralStore, ip: str, policy: Policy) -> list[str] | None:
    """The owner names a finished lookup found for `ip` (network name first), or None."""
    raw = await store.get(cache_key(ip, policy))
    if raw is None:
        return None
    try:
        names = json.loads(raw).get("names")
    except (ValueError, AttributeError):
        return None
    return [str(n) for n in names] if isinstance(names, list) and names else None


def owner_names(response: dict[str, Any], ip: str) -> list[str]:
    """Network name and registrant names of an RDAP IP-network answer, by ipwhois's parser."""
    from ipwhois.net import Net
    from ipwhois.rdap import RDAP

    parsed = RDAP(Net(ip)).lookup(response=response, asn_data={}, depth=0, root_ent_check=False, bootstrap=True)
    names: list[str] = []
    if parsed["network"].get("name"):
        names.append(str(parsed["network"]["name"]))
    for entity in (parsed.get("objects") or {}).values():
        contact = entity.get("contact") or {}
        if "registrant" in (entity.get("roles") or []) and contact.get("name"):
            names.append(str(contact["name"]))
    return list(dict.fromkeys(names))


class RdapLookups:
    """Background RDAP lookups with a bounded number in flight (see the module text)."""

    def __init__(self, store: EphemeralStore, policy) -> None:
        self.store = store
        self.policy = policy
        self._semaphore: asyncio.Semaphore | None = None
        self._tasks: set[asyncio.Task] = set()
        self._running: set[str] = set()
        self._session: aiohttp.ClientSession | None = None

    def schedule(self, ip: str) -> bool:
        """Start a lookup of `ip` unless off, not public, running or too many wait; never waits."""
        policy = self.policy()
        address = parse_address(ip)
        if not policy.risk.rdap or address is None or not is_public_address(address):
            return False
        key = cache_key(ip, policy)
        if key in self._running or len(self._tasks) >= MAX_WAITING:
            return False
        self._running.add(key)
        task = asyncio.get_running_loop().create_task(self._look_up(str(address), key, policy))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _look_up(self, ip: str, key: str, policy: Policy) -> None:
        try:
            if await self.store.get(key) is not None:
                return  # known (or recently failed): nothing to ask
            if self._semaphore is None:
                self._semaphore = asyncio.Semaphore(policy.risk.rdap_concurrency)
            async with self._semaphore:
                try:
                    names = await self._fetch(ip, policy)
                except Exception as exc:  # any failure: remembered briefly, never raised
                    log.info("RDAP lookup failed", ip=ip, error=type(exc).__name__)
                    await self.store.set(key, json.dumps({"failed": True}).encode(), ttl=FAILURE_TTL)
                    return
            log.info("RDAP owner found", ip=ip, owner=names[0] if names else None)
            await self.store.set(key, json.dumps({"names": names}).encode(), ttl=CACHE_TTL)
        except Exception:
            log.exception("RDAP lookup not stored", ip=ip)
        finally:
            self._running.discard(key)

    async def _fetch(self, ip: str, policy: Policy) -> list[str]:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        url = f"{policy.risk.rdap_url.rstrip('/')}/ip/{ip}"
        timeout = aiohttp.ClientTimeout(total=policy.risk.rdap_timeout)
        async with self._session.get(url, timeout=timeout, headers={"Accept": "application/rdap+json"},
                                     max_redirects=3) as answer:
            answer.raise_for_status()
            body = await answer.content.read(MAX_ANSWER + 1)
        if len(body) > MAX_ANSWER:
            raise ValueError("RDAP answer too large")
        response = json.loads(body)
        if not isinstance(response, dict):
            raise ValueError("RDAP answer is not an object")
        return await asyncio.to_thread(owner_names, response, ip)

    async def drain(self) -> None:
        """Wait for the lookups started so far (tests; shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._session is not None:
            await self._session.close()
