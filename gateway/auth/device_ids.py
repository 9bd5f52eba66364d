"""Device ids: the long-lived `gw_device` cookie, issued and signed by the gateway.

A session is bound to its device id, and a remembered device is a signed statement about
one. If the gateway adopted whatever `gw_device` a browser presented, an attacker could
plant a value of their choosing in a victim's browser (a sibling subdomain can set
cookies) and know the device id of the session that follows. So an id is adopted at login
only when it carries the gateway's own signature; anything else gets a fresh id.

The signature is an HMAC under a key derived from the operator's key ring, checked
against every key the ring holds, so ids issued before a key rotation stay valid.
"""

from __future__ import annotations

import base64
import hmac

from gateway.auth.keys import KeyRing
from gateway.sessions.model import new_token

PURPOSE = "device-id"
SIGNATURE_CHARS = 32  # 192 bits of the HMAC-SHA256, base64url


class DeviceIds:
    def __init__(self, keyring: KeyRing) -> None:
        self.keyring = keyring

    def _signature(self, nonce: str, key_id: str | None = None) -> str:
        mac = self.keyring.mac(PURPOSE, nonce.encode(), key_id)
        return base64.urlsafe_b64encode(mac).decode()[:SIGNATURE_CHARS]

    def issue(self) -> str:
        """A fresh device id: 256 random bits and their signature."""
        nonce = new_token()
        return f"{nonce}.{self._signature(nonce)}"

    def is_ours(self, device_id: str | None) -> bool:
        """Whether `device_id` was issued by this gateway (under any key still held)."""
        if not device_id or device_id.count(".") != 1:
            return False
        nonce, _, signature = device_id.partition(".")
        if not nonce or len(signature) != SIGNATURE_CHARS:
            return False
        return any(
            hmac.compare_digest(signature, self._signature(nonce, key_id)) for key_id in self.keyring.key_ids
        )

    def adopt(self, presented: str | None) -> str:
        """The presented id when the gateway signed it, else a fresh one."""
        return presented if self.is_ours(presented) else self.issue()
