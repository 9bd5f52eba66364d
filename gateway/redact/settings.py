"""Deployment settings of the two outbound listeners: the SMTP relay and the egress proxy.

They describe where the listeners bind and whom they talk to; what gets redacted is the
policy's business (`notifications:`). `gateway/config.py` embeds both models in the
deployment configuration, so every field carries its default, title and description.
"""

from __future__ import annotations

import os
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ByteSize, ConfigDict, Field, IPvAnyNetwork, SecretStr, field_validator, model_validator

from gateway.policy.durations import Duration

LOOPBACK_ONLY = ["127.0.0.1/32", "::1/128"]
# Names that reach this host whatever listen_host says (the start-time check resolves the rest).
_SELF_NAMES = {"localhost", "127.0.0.1", "::1", "0.0.0.0", "::"}


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


def resolve_secret(value: str | SecretStr | None) -> str | None:
    """`env:NAME` reads the variable NAME, so secrets need not sit in the config file."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if value is None or not value.startswith("env:"):
        return value
    name = value.removeprefix("env:")
    if name not in os.environ:
        raise LookupError(f"environment variable {name} is not set")
    return os.environ[name]


class SmarthostSettings(_Settings):
    model_config = ConfigDict(extra="forbid", validate_default=True, hide_input_in_errors=True)  # passwords

    host: str = Field("127.0.0.1", title="Smarthost", description="Mail server that receives the redacted messages.")
    port: int = Field(25, ge=1, le=65535, title="Smarthost port", description="465 with use_tls, 587 or 25 otherwise.")
    username: str | None = Field(None, title="Username", description="Login at the smarthost; none: no AUTH.")
    password: SecretStr | None = Field(
        None, title="Password", description="Login password, or `env:NAME` to read it from the environment."
    )
    use_tls: bool = Field(False, title="Implicit TLS", description="Speak TLS from the first byte (port 465).")
    start_tls: bool | None = Field(
        None,
        title="STARTTLS",
        description="true: require STARTTLS; false: never; unset: use it when the smarthost offers it.",
    )
    ca_file: str | None = Field(
        None, title="CA file", description="PEM bundle to verify the smarthost's certificate; unset: system CAs."
    )
    timeout: float = Field(30.0, gt=0, title="Timeout", description="Seconds to wait for each smarthost reply.")


class SmtpRelaySettings(_Settings):
    model_config = ConfigDict(extra="forbid", validate_default=True, hide_input_in_errors=True)  # auth_users

    enabled: bool = Field(False, title="Enabled", description="Run the SMTP relay that redacts outgoing mail.")
    listen_host: str = Field("127.0.0.1", title="Listen address", description="Address the relay binds to.")
    port: int = Field(2525, ge=0, le=65535, title="Port", description="Port the PMS sends its mail to.")
    hostname: str = Field(
        "pms-gateway", title="Host name", description="Name in the greeting and in EHLO to the smarthost."
    )
    allowed_clients: list[IPvAnyNetwork] = Field(
        default_factory=lambda: list(LOOPBACK_ONLY),
        title="Allowed clients",
        description="Networks (CIDR) that may send mail through the relay; everyone else is refused.",
    )
    auth_users: dict[str, str] = Field(
        default_factory=dict,
        title="AUTH users",
        description="Username to `pbkdf2_sha256$...` hash (see `hash_password`) or `env:NAME`; "
        "when set, AUTH is required (and needs STARTTLS).",
    )
    starttls_cert: str | None = Field(None, title="STARTTLS certificate", description="PEM certificate chain.")
    starttls_key: str | None = Field(None, title="STARTTLS key", description="PEM private key of the certificate.")
    require_starttls: bool = Field(
        True, title="Require STARTTLS", description="With a certificate: refuse mail until the client starts TLS."
    )
    smarthost: SmarthostSettings = Field(
        default_factory=SmarthostSettings, title="Smarthost", description="Where redacted mail is delivered."
    )
    max_message_size: int = Field(
        10 * 1024 * 1024, gt=0, title="Maximum message size", description="Bytes; larger messages are refused."
    )
    queue_lifetime: Duration = Field(
        4 * 86400, title="Queue lifetime",
        description="How long a queued message is retried (1 min doubling to 1 h) before it fails for good.",
    )
    delay_warning: Duration = Field(
        3600, title="Delay warning", description="Alert the operator (mail_delayed) when a message waits this long.",
    )
    disk_reserve: ByteSize = Field(
        "100MB", title="Disk reserve",
        description="Below this much free space in data_dir the relay answers 452 (the PMS retries later).",
    )
    max_received_headers: int = Field(
        30, ge=1, le=500, title="Hop limit",
        description="A message with more Received headers than this is refused (554): a mail loop.",
    )
    no_reply_addresses: list[str] = Field(
        default_factory=list, title="No-reply addresses",
        description="The PMS's own no-reply senders: never sent a delivery status notification (bounce).",
    )

    @field_validator("no_reply_addresses")
    @classmethod
    def _lowercase(cls, addresses: list[str]) -> list[str]:
        return [a.strip().lower() for a in addresses]

    @field_validator("auth_users")
    @classmethod
    def _hashed_or_env(cls, users: dict[str, str]) -> dict[str, str]:
        for name, stored in users.items():
            if not stored.startswith(("env:", "pbkdf2_sha256$")):
                raise ValueError(f"auth_users.{name}: expected a pbkdf2_sha256$... hash or env:NAME, not a password")
        return users

    @model_validator(mode="after")
    def _tls_consistent(self) -> SmtpRelaySettings:
        if (self.starttls_cert is None) != (self.starttls_key is None):
            raise ValueError("starttls_cert and starttls_key go together")
        if self.auth_users and self.starttls_cert is None:
            raise ValueError("auth_users needs starttls_cert/starttls_key: AUTH never travels in clear text")
        if self.smarthost.port == self.port and self.smarthost.host.strip("[]").lower() in _SELF_NAMES | {
            self.listen_host.strip("[]").lower()
        }:
            raise ValueError(
                f"smarthost {self.smarthost.host}:{self.smarthost.port} is the relay itself (a mail loop): "
                "set smtp_relay.smarthost to the mail server that delivers"
            )
        return self


class ReverseTarget(_Settings):
    listen_port: int = Field(ge=1, le=65535, title="Listen port", description="Local port the PMS calls instead.")
    upstream: str = Field(
        title="Upstream", description="Provider base URL, scheme and host only, e.g. https://api.sms-provider.example."
    )

    @field_validator("upstream")
    @classmethod
    def _origin_only(cls, value: str) -> str:
        url = urlsplit(value)
        if url.scheme not in ("http", "https") or not url.hostname or url.path not in ("", "/") or url.query:
            raise ValueError("expected http(s)://host[:port] without path")
        return f"{url.scheme}://{url.netloc}"


class EgressSettings(_Settings):
    enabled: bool = Field(False, title="Enabled", description="Run the egress proxy (a supervised child process).")
    mode: Literal["regular", "reverse"] = Field(
        "regular",
        title="Mode",
        description="regular: the PMS uses it as HTTP(S) proxy and trusts its CA; "
        "reverse: the PMS calls one local port per provider (reverse_targets).",
    )
    listen_host: str = Field("127.0.0.1", title="Listen address", description="Address every listener binds to.")
    port: int = Field(8025, ge=1, le=65535, title="Port", description="Proxy port in regular mode.")
    allowed_clients: list[IPvAnyNetwork] = Field(
        default_factory=lambda: list(LOOPBACK_ONLY),
        title="Allowed clients",
        description="Networks (CIDR) that may use the proxy; other connections are closed.",
    )
    reverse_targets: list[ReverseTarget] = Field(
        default_factory=list, title="Reverse targets", description="Listeners of reverse mode, one per provider."
    )
    confdir: str = Field(
        "var/egress-ca", title="CA directory", description="Where the interception CA is created and kept."
    )
    upstream_ca_file: str | None = Field(
        None,
        title="Upstream CA file",
        description="PEM CA used to verify providers instead of the system store (e.g. a private provider).",
    )

    max_body_size: int = Field(
        10 * 1024 * 1024, gt=0, title="Maximum body size", description="Bytes; larger requests are refused (413)."
    )

    @model_validator(mode="after")
    def _reverse_has_targets(self) -> EgressSettings:
        if self.mode == "reverse" and not self.reverse_targets:
            raise ValueError("mode reverse needs at least one entry in reverse_targets")
        return self
