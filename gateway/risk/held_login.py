"""A login interrupted by the captcha, kept so nobody types the password twice.

When the captcha gate stops a browser's login form, the POST body (username, password,
the PMS's hidden fields) is encrypted with AES-GCM under a fresh random key that is put
in the `gw_held` cookie (HttpOnly, SameSite=Strict, two minutes) and nowhere else; the
ephemeral store keeps only the ciphertext, under a random id, for two minutes. Someone
reading Redis cannot decrypt a password; someone holding only the cookie has nothing to
decrypt once the two minutes are over or the login was replayed (the store entry is
taken, so it works once). The client's network is authenticated data: a cookie carried
to another address decrypts nothing.

After the captcha is solved, the captcha page answers 307 to the login URL: the browser
posts the captcha form there again, with the cookie, and the gate swaps that body for the
held one. The login then runs through every check as any login does (captcha pass,
lockouts, groups' networks, the PMS), as if the user had just submitted it.

Only a classic form post (`application/x-www-form-urlencoded`, what the 307 repeats) is
held; JSON and multipart logins are answered as before and their client tries again.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.store.base import EphemeralStore

HOLD_FOR = 120  # seconds
FORM = "application/x-www-form-urlencoded"
MAX_HELD = 64 * 1024  # bytes of body
NONCE = 12


@dataclass(frozen=True, slots=True)
class HeldLogin:
    body: bytes
    query: str  # the login request's query string, for the replay's URL


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class HeldLogins:
    def __init__(self, store: EphemeralStore) -> None:
        self.store = store

    async def hold(self, body: bytes, query: str, network: str) -> str | None:
        """Keep `body`; returns the cookie value (`<id>.<key>`), or None when too large."""
        if len(body) > MAX_HELD:
            return None
        held_id = secrets.token_urlsafe(16)
        key = AESGCM.generate_key(bit_length=256)
        nonce = secrets.token_bytes(NONCE)
        plaintext = json.dumps({"body": _b64(body), "query": query}).encode()
        sealed = AESGCM(key).encrypt(nonce, plaintext, _bound(held_id, network))
        await self.store.set(f"captcha:held:{held_id}", nonce + sealed, ttl=HOLD_FOR)
        return f"{held_id}.{_b64(key)}"

    async def peek(self, cookie: str | None, network: str) -> HeldLogin | None:
        """The held login the cookie opens, left in place (the captcha page's redirect)."""
        return await self._open(cookie, network, take=False)

    async def take(self, cookie: str | None, network: str) -> HeldLogin | None:
        """The held login the cookie opens, removed: a second replay finds nothing."""
        return await self._open(cookie, network, take=True)

    async def _open(self, cookie: str | None, network: str, *, take: bool) -> HeldLogin | None:
        held_id, _, encoded_key = (cookie or "").partition(".")
        if not held_id or len(held_id) > 64 or not encoded_key:
            return None
        try:
            key = _unb64(encoded_key)
        except (binascii.Error, ValueError):
            return None
        if len(key) != 32:
            return None
        name = f"captcha:held:{held_id}"
        sealed = await (self.store.take(name) if take else self.store.get(name))
        if sealed is None or len(sealed) <= NONCE:
            return None
        try:
            data = json.loads(AESGCM(key).decrypt(sealed[:NONCE], sealed[NONCE:], _bound(held_id, network)))
            return HeldLogin(_unb64(data["body"]), str(data["query"]))
        except (InvalidTag, ValueError, KeyError, TypeError):
            return None


def _bound(held_id: str, network: str) -> bytes:
    return f"{held_id}|{network}".encode()
