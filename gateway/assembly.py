"""Which addons run, in which order, for a given configuration.

The order is the data flow: guards that refuse cheaply come first (CSRF, login
interception, sessions), filters next, the audit recorder last so it sees every decision.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.access.api_clients import ApiClients
from gateway.access.api_tokens import ApiTokens
from gateway.access.hidden_links import HiddenLinks
from gateway.access.origin_check import OriginCheck
from gateway.admin.metrics import Metrics
from gateway.audit.services import AuditServices, build_audit
from gateway.auth.account import AccountPage
from gateway.auth.account_link import AccountLink
from gateway.auth.account_step_up import AccountStepUp
from gateway.auth.challenge import ChallengePages, LoginCompleter
from gateway.auth.device_ids import DeviceIds
from gateway.auth.events import LoginEvents
from gateway.auth.keys import KeyRing
from gateway.auth.login import LoginInterceptor
from gateway.auth.password_forms import PasswordForms
from gateway.auth.pending import PendingLogins
from gateway.auth.remember import RememberedDevices, RememberWithdrawal
from gateway.auth.security_key_pages import SecurityKeyPages
from gateway.auth.security_keys import SecurityKeys
from gateway.auth.step_up import StepUps
from gateway.auth.support import SupportAccess
from gateway.auth.users import UserDirectory
from gateway.config import Config
from gateway.db import Database, open_database
from gateway.policy.reload import PolicyHolder
from gateway.proxy.body_urls import BodyUrlRewriter
from gateway.proxy.exchange import Addon
from gateway.risk.captcha import CaptchaGate
from gateway.risk.captcha_pages import CaptchaPages
from gateway.risk.lockout import Lockouts
from gateway.risk.ownership import TorExits, tor_list_path
from gateway.risk.rdap import RdapLookups
from gateway.risk.rate_limits import ADDRESS, IDENTITY, GatewayPageLimits, RateLimiter, RateLimits, storage_for
from gateway.sessions.deactivation import DeactivationWatcher
from gateway.sessions.guard import SessionGuard
from gateway.sessions.identity import IdentityCheck
from gateway.sessions.manager import SessionManager
from gateway.sessions.upstream_logout import UpstreamLogout
from gateway.store import create_store
from gateway.store.base import EphemeralStore


@dataclass
class Services:
    """The stores and long-lived objects one gateway process shares between its addons."""

    config: Config
    policy: PolicyHolder
    store: EphemeralStore
    database: Database
    keyring: KeyRing
    users: UserDirectory
    cleanups: list = field(default_factory=list)
    audit: AuditServices | None = None  # set by build_addons: the outbound listeners record there too

    async def close(self) -> None:
        for cleanup in reversed(self.cleanups):
            await cleanup()


async def open_services(
    config: Config, policy: PolicyHolder, clock: Callable[[], float] = time.time
) -> Services:
    config.data_dir.mkdir(parents=True, exist_ok=True)
    keyring = KeyRing.load(config.resolved_key_file, os.environ.get(config.key_env))
    store = create_store(config.store_url)
    database = await open_database(config.resolved_database_url)
    users = UserDirectory(database, keyring, policy, store, clock=clock)
    return Services(config, policy, store, database, keyring, users, cleanups=[database.close, store.close])


async def build_addons(
    config: Config,
    policy: PolicyHolder,
    services: Services | None = None,
    clock: Callable[[], float] = time.time,
) -> tuple[list[Addon], list]:
    """The addons for this deployment and the cleanups to run at shutdown.

    `clock` (seconds since the epoch) is injectable so tests can move time.
    """
    services = services or await open_services(config, policy, clock)
    store, keyring, users = services.store, services.keyring, services.users
    audit = services.audit = await build_audit(config, policy, services.database, ephemeral=store)
    upstream_logout = UpstreamLogout(config, policy, audit.writer)  # its calls are audited
    sessions = SessionManager(store, keyring, policy, upstream_logout=upstream_logout, clock=clock)
    lockouts = Lockouts(store, policy, clock=clock)
    events = LoginEvents(audit.login_history, audit.alerter)
    pending = PendingLogins(store, keyring, lambda: policy().second_factor.pending_login_timeout, clock=clock)
    remembered = RememberedDevices(keyring.derive("remember-device"), clock=clock)
    step_ups = StepUps(store, keyring, lambda: policy().second_factor.pending_login_timeout, clock=clock)
    completer = LoginCompleter(policy, sessions, lockouts, events, remembered, users, step_ups=step_ups)
    support = SupportAccess(services.database, keyring, policy, users, audit.login_history, audit.alerter, clock=clock)
    identity = IdentityCheck(config, policy, users, audit.alerter)
    password_forms = PasswordForms(policy, users, sessions, lockouts, events, pending, step_ups, identity, clock=clock)
    rate_limiter = RateLimiter(policy, storage_for(store))
    security_keys = SecurityKeys(users, store, policy, keyring.derive("webauthn-user-handle"), clock=clock)
    account_step_up = AccountStepUp(users, security_keys, store, lockouts, clock=clock)
    addons: list[Addon] = [
        GatewayPageLimits(rate_limiter),  # the gateway's own pages, per address
        RateLimits(rate_limiter, ADDRESS),  # before any work is done for the request
        ApiClients(policy, ApiTokens(services.database, keyring), rate_limiter),  # before CSRF and sessions
        upstream_logout,
        identity,
        OriginCheck(policy),
        captcha := CaptchaGate(
            policy, users, lockouts, store, keyring.derive("captcha"), audit.geo, clock=clock,
            tor=TorExits(tor_list_path(config.data_dir)), rdap=RdapLookups(store, policy),
        ),
        CaptchaPages(captcha),
        LoginInterceptor(
            policy, users, pending, lockouts, events, remembered, completer, clock=clock, support=support,
            devices=DeviceIds(keyring), identity=identity,
        ),
        password_forms.reset_answers(),  # before the guard: a reset's PMS session never meets the vault
        SessionGuard(policy, sessions, identity),
        password_forms,  # after the guard: reauth and change need its session
        RateLimits(rate_limiter, IDENTITY),  # the login's username, the session's user, API clients
        RememberWithdrawal(policy, remembered),  # after the guard: it needs the session
        challenge := ChallengePages(
            policy, users, pending, completer, lockouts, events, keyring.derive("gateway-forms"), clock=clock,
            support=support,
        ),
        AccountPage(policy, users, sessions, account_step_up, store, keyring, keyring.derive("gateway-forms")),
        SecurityKeyPages(policy, security_keys, challenge, sessions, events, account_step_up),
        DeactivationWatcher(users, sessions),
        HiddenLinks(policy),  # access.hide_links: needs the guard's session
        AccountLink(policy),  # pages.account_link: needs the guard's session
        BodyUrlRewriter(policy, config.upstream.url),
        Metrics(),
        audit.addon,  # last: sees every decision
    ]
    return addons, [audit.close, rate_limiter.close, services.close]
