"""End to end with real processes: `pms-gateway run` with the SMTP relay and the egress
proxy (reverse mode, its own child process) in front of the demo PMS process. The PMS
confirms a booking; the e-mail reaches an SMTP server and the SMS an HTTPS provider, both
redacted; after a SIGTERM the audit trail holds one outbound record per message, from the
gateway's chain (mail) and from the egress child's chain (sms), with detector counts and
no guest data, and `audit verify` accepts both chains."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import aiohttp

from gateway.demo import DEMO_USERS
from tests.notification_fixtures import CARD, NOTIFICATIONS, PASSPORT, PHONE
from tests.processes import ROOT, demo_pms_process, gateway_process
from tests.test_egress import FakeSmsProvider, free_port, self_signed_cert
from tests.test_smtp_relay import Sink, start_sink

INSTANCE = "e2e-run"
# Reservation 1001 of the demo data.
GUEST, EMAIL = "Oliver Bennett", "oliver.bennett@example.co.uk"
SECRETS = [CARD, "4111 1111 1111 1111", PASSPORT, "Oliver", "Bennett", EMAIL, PHONE, "+44 20 7946 0018"]


async def wait_port(port: int, process: subprocess.Popen, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            assert process.poll() is None, "the gateway exited"
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return


async def confirm_at_pms(pms_url: str, reservation: int = 1001) -> dict[str, str]:
    """What a desk clerk does at the PMS itself: log in, press "send confirmation"."""
    password = {name: pw for name, pw, _ in DEMO_USERS}["alice"]
    async with aiohttp.ClientSession(pms_url, cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get("/login") as page:
            token = re.search(r'name="csrf_token" value="([^"]+)"', await page.text()).group(1)
        form = {"username": "alice", "password": password, "csrf_token": token}
        async with http.post("/login", data=form, allow_redirects=False) as login:
            assert login.status == 302
        csrf = next(c.value for c in http.cookie_jar if c.key == "pms_csrf")
        async with http.post(f"/api/reservations/{reservation}/confirm", headers={"X-CSRF-Token": csrf}) as answer:
            assert answer.status == 200
            return await answer.json()


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PMS_GATEWAY_")}
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
    )


def assert_no_guest_data(name: str, data: bytes) -> None:
    for value in SECRETS:
        assert value.encode() not in data, f"{value!r} found in {name}"


async def test_run_audits_mail_and_sms_in_both_chains(tmp_path: Path):
    cert, key = self_signed_cert(tmp_path / "provider", ["localhost", "127.0.0.1"])
    provider = FakeSmsProvider()
    provider_runner = await provider.start(cert, key)
    sink = Sink()
    smarthost = start_sink(free_port(), sink)
    relay_port, egress_port = free_port(), free_port()
    config = {
        "instance_id": INSTANCE,
        "smtp_relay": {
            "enabled": True, "port": relay_port,
            "smarthost": {"host": "127.0.0.1", "port": smarthost.port, "timeout": 5},
        },
        "egress": {
            "enabled": True, "mode": "reverse", "confdir": str(tmp_path / "ca"), "upstream_ca_file": str(cert),
            "reverse_targets": [{"listen_port": egress_port, "upstream": f"https://localhost:{provider.port}"}],
        },
    }  # fmt: skip
    try:
        with demo_pms_process(smtp_port=str(relay_port), sms_api_url=f"http://127.0.0.1:{egress_port}") as pms_url:
            with gateway_process(tmp_path, pms_url, {"notifications": NOTIFICATIONS}, config) as (_, gateway):
                await wait_port(relay_port, gateway)
                await wait_port(egress_port, gateway, timeout=30)
                assert await confirm_at_pms(pms_url) == {"email": "sent", "sms": "sent"}
                gateway.terminate()  # SIGTERM: the gateway and its egress child drain their writers
                assert await asyncio.to_thread(gateway.wait, 30) == 0
    finally:
        smarthost.stop()
        await provider_runner.cleanup()

    # The e-mail, redacted: the card keeps its last four digits, the passport is gone.
    (mail,) = sink.messages
    plain = mail.get_body(("plain",)).get_content()
    html = mail.get_body(("html",)).get_content()
    assert GUEST in plain and "1111" in plain
    for text in (plain, html):
        assert CARD not in text and "4111 1111 1111 1111" not in text and PASSPORT not in text
    # The SMS, redacted, to the right number.
    (sms,) = provider.requests
    assert sms["form"]["To"] == PHONE and "is confirmed" in sms["form"]["Body"]
    assert CARD not in sms["form"]["Body"] and "1111" in sms["form"]["Body"]

    cfg = str(tmp_path / "config.yaml")
    query = cli("audit", "query", "-c", cfg, "--format", "jsonl")
    assert query.returncode == 0, query.stderr
    records = [json.loads(line) for line in query.stdout.splitlines()]
    outbound = [r for r in records if r["channel"] == "outbound"]
    by_channel = {r["method"]: r for r in outbound}
    assert sorted(r["method"] for r in outbound) == ["mail", "sms"]  # one record per message
    mail_record, sms_record = by_channel["mail"], by_channel["sms"]
    assert mail_record["instance_id"] == INSTANCE
    assert sms_record["instance_id"] == INSTANCE + "-egress"
    assert mail_record["decision"] == sms_record["decision"] == "forwarded"
    assert mail_record["path"] == f"127.0.0.1:{smarthost.port}"
    assert sms_record["path"] == "localhost"
    assert mail_record["extra"]["detectors"]["card"] >= 1 and mail_record["extra"]["detectors"]["passport"] >= 1
    assert sms_record["extra"]["detectors"] == {"card": 1}
    assert_no_guest_data("audit query output", query.stdout.encode())

    # No value anywhere in the database files, the spool, the exported heads or the log.
    data_dir = tmp_path / "var"
    files = [p for p in data_dir.rglob("*") if p.is_file()]
    assert any(p.name == "gateway.db" for p in files)
    for path in files:
        assert_no_guest_data(str(path), path.read_bytes())
    log = (tmp_path / "gateway.log").read_bytes()
    assert_no_guest_data("gateway.log", log)
    assert b"e2e-run-egress" in log  # the child said where its records go

    verify = cli("audit", "verify", "-c", cfg)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert f"{INSTANCE}: " in verify.stdout and f"{INSTANCE}-egress: 1 records" in verify.stdout
    assert "OK: every chain verifies" in verify.stdout
