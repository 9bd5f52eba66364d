"""Which addons run, in which order, for a given configuration.

The order is the data flow: guards that refuse cheaply come first, the audit recorder
last so it sees every decision.
"""

from __future__ import annotations

from gateway.config import Config
from gateway.policy.reload import PolicyHolder
from gateway.proxy.body_urls import BodyUrlRewriter
from gateway.proxy.exchange import Addon


async def build_addons(config: Config, policy: PolicyHolder) -> tuple[list[Addon], list]:
    """The addons for this deployment and the cleanups to run at shutdown."""
    addons: list[Addon] = [BodyUrlRewriter(policy, config.upstream.url)]
    cleanups: list = []
    return addons, cleanups
