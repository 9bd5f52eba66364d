"""The egress proxy child process over real sockets: PMS-side aiohttp client -> mitmproxy
child (regular or reverse mode) -> a fake SMS provider speaking HTTPS with its own CA."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import signal
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.redact.egress import EgressSupervisor, export_ca
from gateway.redact.settings import EgressSettings
from tests.harness import free_port

CARD = "4111 1111 1111 1111"
SMS_PATH = "/2010-04-01/Accounts/AC0123/Messages.json"


def self_signed_cert(directory: Path, hosts: list[str]) -> tuple[Path, Path]:
    """A self-signed server certificate for `hosts` (names or IPs); returns (cert, key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{hosts[0]}.crt", directory / f"{hosts[0]}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


async def start_https(app: web.Application, cert: Path, key: Path) -> tuple[web.AppRunner, int]:
    """Serve `app` over TLS with `cert` on a free loopback port (a fake provider's HTTPS);
    returns the runner (for cleanup) and the port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]




class FakeSmsProvider:
    """A Twilio-shaped SMS API over HTTPS that records every request it gets."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.port = 0

    async def messages(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.requests.append(
            {"path": request.path, "query": dict(request.query), "headers": dict(request.headers), "form": dict(form)}
        )
        return web.json_response({"sid": "SM1", "status": "queued"}, status=201)

    async def start(self, cert: Path, key: Path) -> web.AppRunner:
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", self.messages)
        runner, self.port = await start_https(app, cert, key)
        return runner


@pytest.fixture
async def provider(tmp_path) -> AsyncIterator[tuple[FakeSmsProvider, Path]]:
    cert, key = self_signed_cert(tmp_path / "provider", ["localhost", "127.0.0.1"])
    fake = FakeSmsProvider()
    runner = await fake.start(cert, key)
    yield fake, cert
    await runner.cleanup()


def write_policy(path: Path, *, unmatched: str = "pass", card: object = None) -> Path:
    notifications = {
        "channels": [{"name": "sms", "egress_host": "localhost", "format": "form", "fields": ["Body"],
                      "recipient_field": "To"}],
        "detectors": ["card"],
        "unmatched_egress": unmatched,
    }  # fmt: skip
    if card is not None:
        notifications["actions"] = {"card": card}
    path.write_text(yaml.safe_dump({"notifications": notifications}))
    return path


@pytest.fixture
async def egress(tmp_path) -> AsyncIterator[Callable]:
    """Start an egress child through the supervisor; every child is stopped at teardown."""
    started: list[EgressSupervisor] = []

    async def start(settings: EgressSettings, policy: Path) -> EgressSupervisor:
        supervisor = EgressSupervisor(settings, policy, min_backoff=0.1)
        started.append(supervisor)
        await supervisor.start()
        await supervisor.wait_ready(timeout=30)
        return supervisor

    yield start
    for supervisor in started:
        await supervisor.stop()


def regular_settings(tmp_path: Path, provider_cert: Path, **kw) -> EgressSettings:
    return EgressSettings(
        enabled=True, mode="regular", port=free_port(), confdir=str(tmp_path / "ca"),
        upstream_ca_file=str(provider_cert), **kw,
    )  # fmt: skip


def sms_form(body: str = f"Dear Jane Doe, card {CARD} will be charged on arrival.") -> dict[str, str]:
    return {"To": "+447700900123", "From": "+15005550006", "Body": body}


async def post_via_proxy(settings: EgressSettings, url: str, form: dict) -> tuple[int, str]:
    trust = ssl.create_default_context(cafile=str(export_ca(settings.confdir)))
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=form, proxy=f"http://127.0.0.1:{settings.port}", ssl=trust) as response:
            return response.status, await response.text()


def audit_lines(text: str) -> list[dict]:
    lines = (line.partition("gateway.audit.outbound: ")[2] for line in text.splitlines())
    return [json.loads(line) for line in lines if line]


async def test_regular_mode_redacts_body_keeps_recipient(tmp_path, provider, egress, capfd):
    fake, provider_cert = provider
    settings = regular_settings(tmp_path, provider_cert)
    await egress(settings, write_policy(tmp_path / "policy.yaml"))

    status, _ = await post_via_proxy(settings, f"https://localhost:{fake.port}{SMS_PATH}", sms_form())

    assert status == 201
    (received,) = fake.requests
    body = received["form"]["Body"]
    assert CARD not in body and CARD.replace(" ", "") not in body
    assert "1111" in body and "will be charged on arrival" in body
    assert received["form"]["To"] == "+447700900123"
    assert received["form"]["From"] == "+15005550006"
    await asyncio.sleep(0.2)
    records = audit_lines(capfd.readouterr().err)
    assert {"channel": "sms", "action": "forwarded", "detectors": {"card": 1}}.items() <= records[-1].items()
    assert CARD not in json.dumps(records)

    # Some SMS APIs take the text in the query string: a form channel redacts it there too.
    query = f"?To=%2B447700900123&Body=card+{CARD.replace(' ', '+')}"
    status, _ = await post_via_proxy(settings, f"https://localhost:{fake.port}{SMS_PATH}{query}", {})
    assert status == 201
    assert CARD not in fake.requests[-1]["query"]["Body"] and "1111" in fake.requests[-1]["query"]["Body"]
    assert fake.requests[-1]["query"]["To"] == "+447700900123"


async def test_reverse_mode(tmp_path, provider, egress):
    fake, provider_cert = provider
    listen = free_port()
    settings = EgressSettings(
        enabled=True, mode="reverse", confdir=str(tmp_path / "ca"), upstream_ca_file=str(provider_cert),
        reverse_targets=[{"listen_port": listen, "upstream": f"https://localhost:{fake.port}"}],
    )  # fmt: skip
    await egress(settings, write_policy(tmp_path / "policy.yaml", unmatched="block"))

    async with aiohttp.ClientSession() as http:
        async with http.post(f"http://127.0.0.1:{listen}{SMS_PATH}", data=sms_form()) as response:
            assert response.status == 201

    (received,) = fake.requests
    assert CARD not in received["form"]["Body"]
    assert received["form"]["To"] == "+447700900123"
    assert received["headers"]["Host"] == f"localhost:{fake.port}"


async def test_unmatched_host_blocked_and_policy_reload(tmp_path, provider, egress, capfd):
    fake, provider_cert = provider
    settings = regular_settings(tmp_path, provider_cert)
    policy = write_policy(tmp_path / "policy.yaml", unmatched="block")
    supervisor = await egress(settings, policy)

    # 127.0.0.1 is the same server, but no channel names it: the tunnel is refused.
    with pytest.raises(aiohttp.ClientHttpProxyError) as refused:
        await post_via_proxy(settings, f"https://127.0.0.1:{fake.port}{SMS_PATH}", sms_form())
    assert refused.value.status == 403
    # Plain HTTP to an unnamed host: refused with a JSON reason.
    status, text = await post_via_proxy(settings, "http://unlisted.example/send", sms_form())
    assert status == 403 and json.loads(text)["error"] == "blocked"
    assert fake.requests == []

    # A stricter policy, reloaded without a restart: card numbers now block the message.
    write_policy(policy, unmatched="block", card="block")
    supervisor.reload()
    url = f"https://localhost:{fake.port}{SMS_PATH}"
    for _ in range(50):
        status, text = await post_via_proxy(settings, url, sms_form())
        if status != 201:
            break
        await asyncio.sleep(0.1)
    assert status == 451 and json.loads(text)["error"] == "blocked"
    assert CARD not in text
    # Without guest data the message still goes out.
    status, _ = await post_via_proxy(settings, url, sms_form("Your room is ready."))
    assert status == 201
    assert fake.requests[-1]["form"]["Body"] == "Your room is ready."

    await asyncio.sleep(0.2)
    actions = [(r["channel"], r["action"]) for r in audit_lines(capfd.readouterr().err)]
    assert ("unmatched", "blocked") in actions and ("sms", "blocked") in actions


async def test_client_outside_allowed_clients_is_refused(tmp_path, provider, egress):
    fake, provider_cert = provider
    settings = regular_settings(tmp_path, provider_cert, allowed_clients=["10.0.0.0/8"])
    await egress(settings, write_policy(tmp_path / "policy.yaml"))
    with pytest.raises((aiohttp.ClientError, ConnectionError)):
        await post_via_proxy(settings, f"https://localhost:{fake.port}{SMS_PATH}", sms_form())
    assert fake.requests == []


async def test_supervisor_restarts_a_dead_child(tmp_path, provider, egress):
    fake, provider_cert = provider
    settings = regular_settings(tmp_path, provider_cert)
    supervisor = await egress(settings, write_policy(tmp_path / "policy.yaml"))
    first = supervisor.process
    assert first is not None
    os.kill(first.pid, signal.SIGKILL)
    for _ in range(100):
        if supervisor.process is not first and supervisor.process.returncode is None:
            break
        await asyncio.sleep(0.05)
    await supervisor.wait_ready(timeout=30)
    assert supervisor.restarts == 1
    status, _ = await post_via_proxy(settings, f"https://localhost:{fake.port}{SMS_PATH}", sms_form())
    assert status == 201
    await supervisor.stop()
    assert supervisor.process.returncode is not None


def test_export_ca_creates_a_named_ca(tmp_path):
    path = export_ca(tmp_path / "ca")
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    assert "PMS Gateway" in cert.subject.rfc4514_string()
    assert export_ca(tmp_path / "ca") == path and path.read_bytes() == cert.public_bytes(serialization.Encoding.PEM)
