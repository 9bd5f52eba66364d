"""Security keys (WebAuthn) as a second factor: the two ceremonies, on top of py_webauthn.

A ceremony has two halves. The options half makes a random challenge, remembers it in the
ephemeral store (short TTL, bound to one pending login or one device session, one
outstanding ceremony per binding and purpose) and gives the browser what
`navigator.credentials.create()` / `.get()` need. The answer half *takes* that record (so
a challenge is good for exactly one answer, across every worker), and verifies the
browser's answer against it: challenge, origin, RP id, signature, and for logins the
signature counter (a counter that does not move forward means a cloned key, unless the
authenticator keeps no counter at all: both 0).

The RP id is the host name the browser used (no port), the origin the gateway's public
origin; both are taken from the request that asked for the options and must match the one
that answers. Pages and JSON endpoints are in `security_key_pages.py`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

import structlog
from webauthn import (
    base64url_to_bytes,
    generate_authentication_options,
    generate_registration_options,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import bytes_to_base64url, options_to_json_dict, parse_authentication_credential_json
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from gateway.auth.users import SecurityKey
from gateway.policy.schema import Policy
from gateway.store.base import EphemeralStore

log = structlog.get_logger("gateway.auth.webauthn")

CHALLENGE_TTL = 120.0
"""Seconds between asking for options and answering; the browser is told a bit less."""
BROWSER_TIMEOUT_MS = 90_000
MAX_LABEL = 64
_TRANSPORTS = {t.value: t for t in AuthenticatorTransport}


class CeremonyError(Exception):
    """The ceremony failed. `reason` is one of: no_challenge (expired, used or never asked
    for), no_security_key, unknown_credential (not one of this user's keys), sign_count
    (counter went backwards: a cloned key?), invalid (verification failed, malformed),
    already_registered, inactive."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass
class Ceremony:
    """What the server remembers between the options and the browser's answer."""

    kind: str  # register | authenticate
    user: str
    challenge: str  # base64url
    rp_id: str
    origin: str
    created: float
    label: str | None = None


def rp_id_for(host: str) -> str:
    """The RP id for a Host header value: the host name, lower case, without the port."""
    return (urlsplit("//" + host).hostname or host).lower()


def clean_label(label: object) -> str | None:
    """A user-chosen key name: printable, trimmed, at most MAX_LABEL characters."""
    if not isinstance(label, str):
        return None
    text = "".join(ch for ch in label if ch.isprintable()).strip()
    return text[:MAX_LABEL] or None


class SecurityKeys:
    """Registration and authentication ceremonies for one gateway process.

    `users` is the `UserDirectory` (keys are stored there); `handle_key` derives the opaque
    WebAuthn user handle from the user's row id (so it names nobody); `clock` is
    injectable so tests can move time."""

    def __init__(
        self,
        users,
        store: EphemeralStore,
        policy: Callable[[], Policy],
        handle_key: bytes,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.users = users
        self.store = store
        self.policy = policy
        self.handle_key = handle_key
        self.clock = clock

    def enabled(self) -> bool:
        return "security_key" in self.policy().second_factor.methods

    # -- ceremony state --------------------------------------------------------------

    @staticmethod
    def _key(purpose: str, binding: str) -> str:
        return f"webauthn:{purpose}:{hashlib.sha256(binding.encode()).hexdigest()}"

    async def _remember(self, purpose: str, binding: str, ceremony: Ceremony) -> None:
        await self.store.set(self._key(purpose, binding), json.dumps(asdict(ceremony)).encode(), ttl=CHALLENGE_TTL)

    async def _take(self, purpose: str, binding: str, kind: str, user: str, origin: str) -> Ceremony:
        data = await self.store.take(self._key(purpose, binding))
        if data is None:
            raise CeremonyError("no_challenge")
        ceremony = Ceremony(**json.loads(data))
        if ceremony.kind != kind or ceremony.user != user or ceremony.origin != origin:
            raise CeremonyError("no_challenge", "ceremony for another user, kind or origin")
        if self.clock() >= ceremony.created + CHALLENGE_TTL:
            raise CeremonyError("no_challenge", "expired")
        return ceremony

    async def user_handle(self, name: str) -> bytes:
        user = await self.users.ensure(name)
        return hmac.new(self.handle_key, f"webauthn-user:{user.id}".encode(), hashlib.sha256).digest()

    @staticmethod
    def _descriptors(keys: list[SecurityKey]) -> list[PublicKeyCredentialDescriptor]:
        return [
            PublicKeyCredentialDescriptor(
                id=key.credential_id,
                transports=[_TRANSPORTS[t] for t in key.transports if t in _TRANSPORTS] or None,
            )
            for key in keys
        ]

    # -- registration ----------------------------------------------------------------

    async def registration_options(
        self, user: str, *, purpose: str, binding: str, rp_id: str, origin: str, label: str | None = None
    ) -> dict:
        """Options for `navigator.credentials.create()`; the user's keys are excluded."""
        user = self.users.normalise(user)
        existing = await self.users.security_keys(user)
        options = generate_registration_options(
            rp_id=rp_id,
            rp_name=self.policy().property,
            user_name=user,
            user_id=await self.user_handle(user),
            user_display_name=user,
            timeout=BROWSER_TIMEOUT_MS,
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.PREFERRED,
                user_verification=UserVerificationRequirement.PREFERRED,
            ),
            exclude_credentials=self._descriptors(existing),
        )
        await self._remember(purpose, binding, Ceremony(
            "register", user, bytes_to_base64url(options.challenge), rp_id, origin, self.clock(), clean_label(label),
        ))
        return options_to_json_dict(options)

    async def register(self, user: str, credential: object, *, purpose: str, binding: str, origin: str) -> SecurityKey:
        """Verify the browser's answer to `registration_options` and save the key."""
        user = self.users.normalise(user)
        ceremony = await self._take(purpose, binding, "register", user, origin)
        if not isinstance(credential, dict):
            raise CeremonyError("invalid", "credential is not an object")
        try:
            verified = verify_registration_response(
                credential=credential,
                expected_challenge=base64url_to_bytes(ceremony.challenge),
                expected_rp_id=ceremony.rp_id,
                expected_origin=ceremony.origin,
                require_user_verification=False,
            )
        except Exception as exc:  # the input is the browser's: any parse error is a refusal
            raise CeremonyError("invalid", str(exc)) from exc
        transports = credential.get("response", {}).get("transports") or []
        transports = [t for t in transports if isinstance(t, str) and t in _TRANSPORTS]
        label = ceremony.label or f"Security key {len(await self.users.security_keys(user)) + 1}"
        key = await self.users.add_security_key(
            user,
            credential_id=verified.credential_id,
            public_key=verified.credential_public_key,
            sign_count=verified.sign_count,
            transports=transports,
            label=label,
        )
        if key is None:
            record = await self.users.get(user)
            raise CeremonyError("inactive" if record is not None and not record.active else "already_registered")
        log.info("security key registered", user=user, key=key.id, label=key.label, aaguid=verified.aaguid)
        return key

    # -- authentication --------------------------------------------------------------

    async def authentication_options(self, user: str, *, purpose: str, binding: str, rp_id: str, origin: str) -> dict:
        """Options for `navigator.credentials.get()`, allowing only the user's keys."""
        user = self.users.normalise(user)
        keys = await self.users.security_keys(user)
        if not keys:
            raise CeremonyError("no_security_key")
        options = generate_authentication_options(
            rp_id=rp_id,
            timeout=BROWSER_TIMEOUT_MS,
            allow_credentials=self._descriptors(keys),
            user_verification=UserVerificationRequirement.PREFERRED,
        )
        await self._remember(purpose, binding, Ceremony(
            "authenticate", user, bytes_to_base64url(options.challenge), rp_id, origin, self.clock(),
        ))
        return options_to_json_dict(options)

    async def authenticate(self, user: str, credential: object, *, purpose: str, binding: str, origin: str) -> SecurityKey:
        """Verify an assertion against the ceremony and the user's stored key; on success
        the key's counter and last use are updated."""
        user = self.users.normalise(user)
        ceremony = await self._take(purpose, binding, "authenticate", user, origin)
        if not isinstance(credential, dict):
            raise CeremonyError("invalid", "credential is not an object")
        try:
            parsed = parse_authentication_credential_json(credential)
        except Exception as exc:
            raise CeremonyError("invalid", str(exc)) from exc
        keys = await self.users.security_keys(user)
        key = next((k for k in keys if hmac.compare_digest(k.credential_id, parsed.raw_id)), None)
        if key is None:
            raise CeremonyError("unknown_credential")
        handle = parsed.response.user_handle
        if handle is not None and not hmac.compare_digest(handle, await self.user_handle(user)):
            raise CeremonyError("unknown_credential", "user handle of someone else")
        try:
            verified = verify_authentication_response(
                credential=parsed,
                expected_challenge=base64url_to_bytes(ceremony.challenge),
                expected_rp_id=ceremony.rp_id,
                expected_origin=ceremony.origin,
                credential_public_key=key.public_key,
                credential_current_sign_count=key.sign_count,
                require_user_verification=False,
            )
        except Exception as exc:
            if "sign count" in str(exc).lower():
                log.warning("security key counter went backwards: possible cloned key", user=user, key=key.id,
                            stored=key.sign_count)
                raise CeremonyError("sign_count", str(exc)) from exc
            raise CeremonyError("invalid", str(exc)) from exc
        if not await self.users.update_sign_count(user, key.credential_id, key.sign_count, verified.new_sign_count):
            # another worker accepted an assertion of this key at the same counter value
            raise CeremonyError("sign_count", "counter already used")
        return key
