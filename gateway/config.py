"""Deployment settings (config.yaml): listeners, upstream, stores, keys, GeoIP paths.

Behaviour lives in policy files; this file says where things are. Every key can be
overridden by an environment variable `PMS_GATEWAY_<SECTION>__<KEY>` (values are read as
YAML scalars, so `PMS_GATEWAY_PUBLIC_URLS='[https://pms.hotel.example]'` works), which is
how containers are configured.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import ByteSize, Field, ValidationError, ValidationInfo, field_validator

from gateway.policy.durations import Duration
from gateway.policy.errors import CONFIG_KEYS_HINT, ConfigError, ConfigProblem, problems_from_validation
from gateway.policy.types import Cidr, Section
from gateway.redact.settings import EgressSettings, SmtpRelaySettings
from gateway.policy.yaml_source import PolicyYamlLoader, YamlError, YamlSource, load_yaml

ENV_PREFIX = "PMS_GATEWAY_"


class ListenSettings(Section):
    host: str = Field("127.0.0.1", description="Address of the staff-facing listener.")
    port: int = Field(8080, ge=0, le=65535)
    tls_cert: Path | None = Field(None, description="PEM certificate chain: TLS at the gateway.")
    tls_key: Path | None = Field(None, description="PEM private key for tls_cert.")
    workers: int = Field(1, ge=1, description="Processes sharing the port (needs a Redis store when > 1).")
    engine: Literal["aiohttp", "lean"] = Field(
        "lean",
        description="HTTP/1.1 engine of the data path: lean (httptools both ends, pooled keep-alive upstream "
        "connections; the default), or aiohttp (aiohttp's server and client).",
    )


class UpstreamSettings(Section):
    url: str = Field("http://127.0.0.1:8081", description="Base URL of the PMS, reachable only by the gateway.")
    connect_timeout: Duration = Field(5, description="Time to open a connection to the PMS.")
    read_timeout: Duration = Field(60, description="Longest silence from the PMS before a 504.")
    pool_size: int = Field(100, ge=1, description="Keep-alive connections kept open to the PMS.")
    verify_tls: bool = Field(True, description="Check the PMS's certificate when url is https.")
    ca_file: Path | None = Field(None, description="CA bundle for an https PMS with a private CA.")

    @field_validator("url")
    @classmethod
    def _absolute_http(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r} is not an http(s) URL: write e.g. http://10.0.0.5:8081")
        return value.rstrip("/")


class LimitsSettings(Section):
    max_header_size: int = Field(8190, ge=1024, description="Longest request line or header line, in bytes.")
    max_headers: int = Field(100, ge=10, description="Most request headers accepted.")
    max_body_size: ByteSize = Field("1GiB", description="Largest request body; larger gets 413.")
    request_timeout: Duration = Field(300, description="Longest time a whole request may take.")
    header_timeout: Duration = Field(15, description="Longest time to receive a request's head (lean engine; slowloris).")
    buffer_below: ByteSize = Field(
        "64KiB", description="Bodies with a known length below this are read whole instead of streamed (faster)."
    )


class GeoipSettings(Section):
    city: Path | None = Field(None, description="GeoLite2/GeoIP2 City database (.mmdb).")
    asn: Path | None = Field(None, description="GeoLite2 ASN database.")
    anonymous_ip: Path | None = Field(None, description="GeoIP2 Anonymous IP database (VPN, Tor, hosting).")


class SmtpSettings(Section):
    host: str | None = Field(None, description="Mail server for operator alerts; none = alerts only logged.")
    port: int = 25
    username: str | None = None
    password: str | None = None
    starttls: bool = False
    use_tls: bool = False
    sender: str = "pms-gateway@localhost"


class AlertsWebhookSettings(Section):
    url: str | None = Field(None, description="POST every alert (and exported audit chain heads) here as JSON.")
    secret: str | None = Field(
        None, description="HMAC-SHA256 key: requests carry `X-Gateway-Signature: sha256=<hex>` of the body."
    )
    timeout: Duration = Field(5, description="Give up on one webhook call after this long.")


class AdminSettings(Section):
    enabled: bool = True
    host: str = Field("127.0.0.1", description="Console, metrics and health; loopback by default.")
    port: int = Field(9090, ge=0, le=65535)
    tls_cert: Path | None = Field(None, description="PEM certificate chain: the console over TLS (needed off loopback).")
    tls_key: Path | None = Field(None, description="PEM private key for tls_cert.")
    metrics_token: str | None = Field(
        None, description="Bearer token /metrics asks for when the listener is not on loopback (none = refused there)."
    )


class LogSettings(Section):
    format: Literal["auto", "json", "console"] = Field(
        "auto", description="`auto`: readable on a terminal, JSON otherwise."
    )
    level: Literal["debug", "info", "warning", "error"] = "info"


class Config(Section):
    public_urls: list[str] = Field(
        ["http://127.0.0.1:8080"],
        description="The gateway's addresses as staff browsers see them; other Host headers are refused.",
    )
    listen: ListenSettings = ListenSettings()
    upstream: UpstreamSettings = UpstreamSettings()
    trusted_proxies: list[Cidr] = Field(
        [], description="Front proxies whose X-Forwarded-For/-Proto are believed."
    )
    limits: LimitsSettings = LimitsSettings()
    policy_paths: list[Path] = Field([Path("policies/default.yaml")], description="Policy files or folders.")
    data_dir: Path = Field(Path("var"), description="Spool, keys and the SQLite file live here.")
    store_url: str = Field("memory://", description="Ephemeral store: memory:// (one process) or redis://host:6379/0.")
    database_url: str | None = Field(
        None, description="Durable store; default sqlite+aiosqlite:///<data_dir>/gateway.db, or postgresql://..."
    )
    key_file: Path | None = Field(None, description="Encryption key file; default <data_dir>/secret.key.")
    key_env: str = Field("PMS_GATEWAY_KEY", description="Environment variable that may hold the key instead.")
    instance_id: str | None = Field(None, description="Name of this instance in the audit chain; default the host name.")
    geoip: GeoipSettings = GeoipSettings()
    smtp: SmtpSettings = SmtpSettings()
    alerts_webhook: AlertsWebhookSettings = AlertsWebhookSettings()
    admin: AdminSettings = AdminSettings()
    log: LogSettings = LogSettings()
    smtp_relay: SmtpRelaySettings = Field(
        default_factory=SmtpRelaySettings, description="SMTP relay redacting the PMS's outgoing mail."
    )
    egress: EgressSettings = Field(
        default_factory=EgressSettings, description="Egress proxy redacting the PMS's SMS/e-mail API calls."
    )

    @field_validator("public_urls")
    @classmethod
    def _urls(cls, values: list[str]) -> list[str]:
        if not values:
            raise ValueError("at least one public URL is needed, e.g. https://pms.hotel.example")
        for value in values:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"{value!r} is not an http(s) URL")
        return [v.rstrip("/") for v in values]

    @field_validator("store_url")
    @classmethod
    def _workers_share_a_store(cls, value: str, info: ValidationInfo) -> str:
        listen = info.data.get("listen")  # validated before: declared above
        if listen is not None and listen.workers > 1 and value.startswith("memory"):
            raise ValueError(
                f"listen.workers is {listen.workers}, but memory:// is one process's memory: each worker would "
                "keep its own sessions (a login on one unknown to the others); set store_url to "
                "redis://HOST:6379/0, or listen.workers to 1"
            )
        return value

    @cached_property
    def public_hosts(self) -> frozenset[str]:
        """Host header values accepted: `host` and `host:port` for every public URL."""
        hosts = set()
        for url in self.public_urls:
            parts = urlsplit(url)
            default = 443 if parts.scheme == "https" else 80
            port = parts.port or default
            hosts.add(f"{parts.hostname}:{port}".lower())
            if port == default:
                hosts.add(parts.hostname.lower())
        return frozenset(hosts)

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'gateway.db'}"

    @property
    def resolved_key_file(self) -> Path:
        return self.key_file or self.data_dir / "secret.key"


def _env_value(raw: str) -> Any:
    """Lists and mappings in YAML flow style; scalars typed as YAML types them; else the text.

    A URL such as `redis://h:6379/0?prefix=gw:` would read as a YAML mapping; only text that
    starts like a flow collection is taken as one.
    """
    if not raw:
        return raw
    try:
        value = yaml.load(raw, Loader=PolicyYamlLoader)
    except yaml.YAMLError:
        return raw
    if isinstance(value, (list, dict)) and raw.lstrip()[:1] not in "[{":
        return raw
    return value


def load_config(path: Path | str | None, environ: dict[str, str] | None = None) -> Config:
    """Read config.yaml (optional) and apply environment overrides."""
    environ = os.environ if environ is None else environ
    sources: list[YamlSource] = []
    data: dict[str, Any] = {}
    if path is not None:
        try:
            source = load_yaml(Path(path))
        except YamlError as exc:
            raise ConfigError([ConfigProblem(exc.path, exc.line, exc.key, exc.message)]) from None
        if not isinstance(source.data, dict):
            raise ConfigError([ConfigProblem(source.path, 1, "", "config is a mapping of sections")])
        sources.append(source)
        data = source.data
    env_source = YamlSource(path=Path("(environment)"), data={})
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "KEY":
            continue
        keys = name.removeprefix(ENV_PREFIX).lower().split("__")
        target = data
        for key in keys[:-1]:
            target = target.setdefault(key, {})
        target[keys[-1]] = _env_value(raw)
        env_source.lines[tuple(keys)] = 0
    sources.append(env_source)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(problems_from_validation(exc, sources, keys_hint=CONFIG_KEYS_HINT)) from None
