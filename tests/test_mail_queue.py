"""The SMTP relay as store and forward, over real sockets: PMS-side client (aiosmtplib) ->
relay (queue in tmp_path) -> aiosmtpd smarthost. The delivery worker's clock is injected
and advanced: no test sleeps through a retry interval."""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import stat
from pathlib import Path

import aiosmtplib
import pytest
from aiosmtpd.controller import Controller
from prometheus_client import generate_latest
from typer.testing import CliRunner

from gateway.admin.metrics import Metrics
from gateway.audit.keys import key_path, load_or_create_keys
from gateway.cli import app
from gateway.notify.alerter import Alerter
from gateway.policy.schema import Policy
from gateway.preflight import StartupRefused
from gateway.redact.engine import Redactor
from gateway.redact.policy import ChannelRule, NotificationsPolicy
from gateway.redact.settings import SmarthostSettings, SmtpRelaySettings
from gateway.redact.smtp_relay import start_smtp_relay
from tests.harness import free_port
from tests.test_egress import self_signed_cert
from tests.test_smtp_relay import delivery_for

CARD = "4111 1111 1111 1111"
GUEST, GUEST_MAIL, OTHER = "Oliver Bennett", "oliver.bennett@mail.example", "anna.berg@mail.example"
SENDER = "reservations@hotel.example"
T0 = 1_700_000_000.0


TEXT = f"Dear {GUEST}, your card {CARD} was charged. Booking ref BK-20931.\r\n"
REPORT = ("--b\r\nContent-Type: text/plain\r\n\r\n" + TEXT + "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
          "Reporting-MTA: dns; mx.mail.example\r\n\r\nFinal-Recipient: rfc822; x@mail.example\r\nAction: failed\r\n"
          "Status: 5.1.1\r\n\r\n--b--\r\n")


def mail(*, extra: str = "", content_type: str = "text/plain; charset=utf-8", body: str = TEXT) -> bytes:
    return (f"From: Hotel <{SENDER}>\r\nTo: {GUEST} <{GUEST_MAIL}>\r\nSubject: Your booking\r\n"
            f"Message-ID: <booking-7@hotel.example>\r\n{extra}MIME-Version: 1.0\r\n"
            f"Content-Type: {content_type}\r\n\r\n{body}").encode()


class Smarthost:
    """aiosmtpd handler: per-recipient RCPT replies, and every delivery it accepted."""

    def __init__(self) -> None:
        self.rcpt_replies: dict[str, str] = {}
        self.deliveries: list[tuple[str, list[str], bytes]] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.deliveries.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"

    def start(self, port: int, **kw) -> Controller:
        controller = Controller(self, hostname="127.0.0.1", port=port, **kw)
        controller.start()
        return controller


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class World:
    """A relay over `data_dir` whose smarthost is `port` (down until `smarthost.start`)."""

    def __init__(self, data_dir: Path, **settings) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.smarthost = Smarthost()
        self.controller: Controller | None = None
        self.clock = Clock()
        self.alerter = Alerter(lambda: Policy())
        self.alerts: list[tuple[str, bool]] = []
        self.settings = SmtpRelaySettings(
            enabled=True, port=0, smarthost=SmarthostSettings(port=self.port, timeout=5), **settings
        )
        self.worker = None
        self.server = None

    async def on_delayed(self, record) -> None:
        self.alerts.append(("mail_delayed", await self.alerter.mail_delayed(record)))

    async def on_failed(self, record) -> None:
        self.alerts.append(("mail_failed", await self.alerter.mail_failed(record)))

    async def start(self) -> World:
        self.worker = delivery_for(self.settings, self.data_dir, clock=self.clock,
                                   on_delayed=self.on_delayed, on_failed=self.on_failed)
        redactor = Redactor(NotificationsPolicy(channels=[ChannelRule(name="mail", smtp=True)], detectors=["card"],
                                                actions={"card": {"mask": "last4"}}))
        self.server = await start_smtp_relay(self.settings, redactor, delivery=self.worker)
        return self

    def smarthost_up(self) -> None:
        self.controller = self.smarthost.start(self.port)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        if self.controller is not None:
            self.controller.stop()
        await self.alerter.close(timeout=0)

    async def send(self, raw: bytes, sender: str = SENDER, recipients: tuple[str, ...] = (GUEST_MAIL,)) -> str:
        port = self.server.sockets[0].getsockname()[1]
        # The client, not aiosmtplib.send: that one refuses the null sender.
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=10, start_tls=False) as client:
            _, reply = await client.sendmail(sender, list(recipients), raw)
        return reply

    def queued(self):
        return [self.worker.queue.get(i) for i in self.worker.queue.ids()]

    async def advance(self, seconds: float) -> None:
        self.clock.now += seconds
        await self.worker.run_due()


@pytest.fixture
async def world(tmp_path):
    w = World(tmp_path)
    yield w
    await w.close()


def parsed(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)


async def test_smarthost_down_the_pms_gets_250_and_the_mail_arrives_once_it_is_back(world):
    await world.start()
    reply = await world.send(mail())
    assert reply.startswith("2.0.0 Queued as")
    (queued,) = world.queued()
    assert queued.attempts == 1 and queued.next_attempt == T0 + 60

    await world.advance(61)  # still down: the next wait doubles
    (queued,) = world.queued()
    assert queued.attempts == 2 and queued.next_attempt == T0 + 61 + 120

    world.smarthost_up()
    await world.advance(60)  # not due yet: nothing is tried
    assert world.smarthost.deliveries == []
    await world.advance(61)
    (delivery,) = world.smarthost.deliveries
    sender, rcpts, data = delivery
    assert sender == SENDER and rcpts == [GUEST_MAIL]
    assert CARD.encode() not in data and b"1111" in data
    assert parsed(data)["Message-ID"] == "<booking-7@hotel.example>"  # kept: a duplicate is recognisable
    assert world.queued() == [] and list(world.worker.queue.directory.glob("*.mail")) == []
    await world.advance(3600)
    assert len(world.smarthost.deliveries) == 1


async def test_only_the_deferred_recipient_is_retried(world):
    world.smarthost_up()
    world.smarthost.rcpt_replies[OTHER] = "451 4.2.0 Mailbox busy"
    await world.start()
    await world.send(mail(), recipients=(GUEST_MAIL, OTHER))
    (first,) = world.smarthost.deliveries
    assert first[1] == [GUEST_MAIL]
    (queued,) = world.queued()
    assert {r.address: r.state for r in queued.recipients} == {GUEST_MAIL: "delivered", OTHER: "pending"}

    del world.smarthost.rcpt_replies[OTHER]
    await world.advance(61)
    first, second = world.smarthost.deliveries
    assert second[1] == [OTHER]  # the guest does not get it twice
    assert parsed(first[2])["Message-ID"] == parsed(second[2])["Message-ID"]
    assert world.queued() == []


async def test_a_5xx_recipient_fails_alone_alerts_and_bounces_headers_only(world):
    world.smarthost_up()
    world.smarthost.rcpt_replies[OTHER] = "550 5.1.1 No such user"
    await world.start()
    assert (await world.send(mail(), recipients=(GUEST_MAIL, OTHER))).startswith("2.0.0")
    await world.worker.run_due()  # the bounce
    original, bounce = world.smarthost.deliveries
    assert original[1] == [GUEST_MAIL]
    assert bounce[0] in ("", "<>") and bounce[1] == [SENDER]  # from the null sender to the envelope sender
    dsn = parsed(bounce[2])
    assert dsn.get_content_type() == "multipart/report" and dsn.get_param("report-type") == "delivery-status"
    assert dsn["Auto-Submitted"] == "auto-replied"
    kinds = [part.get_content_type() for part in dsn.iter_parts()]
    assert kinds == ["text/plain", "message/delivery-status", "text/rfc822-headers"]
    status = bounce[2].decode()
    assert f"Final-Recipient: rfc822; {OTHER}" in status and "Status: 5.1.1" in status and "Action: failed" in status
    assert "Message-ID: <booking-7@hotel.example>" in status
    assert "Dear" not in status and "BK-20931" not in status  # the body is not returned
    assert world.alerts == [("mail_failed", True)]
    assert world.queued() == []


async def test_every_recipient_refused_at_once_is_refused_to_the_pms(world):
    world.smarthost_up()
    world.smarthost.rcpt_replies[GUEST_MAIL] = "550 5.1.1 No such user"
    await world.start()
    with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
        await world.send(mail())
    assert refused.value.code == 550  # the PMS learns it now: no bounce, nothing queued
    await world.worker.run_due()
    assert world.smarthost.deliveries == [] and world.queued() == [] and world.alerts == []


async def test_a_new_relay_over_the_same_data_dir_delivers_what_a_crashed_one_queued(tmp_path):
    first = await World(tmp_path).start()
    await first.send(mail())
    first.server.close()  # the process dies: nothing but the queue files survives
    await first.close()
    assert len(first.queued()) == 1

    second = World(tmp_path)
    second.port = first.port
    second.settings = first.settings
    second.smarthost_up()
    try:
        await second.start()  # a restarted relay tries its queue at once
        async with asyncio.timeout(10):
            while not second.smarthost.deliveries or second.queued():
                await asyncio.sleep(0.02)
        await second.worker.run_due()
        (delivery,) = second.smarthost.deliveries
        assert CARD.encode() not in delivery[2]
    finally:
        await second.close()


async def test_delay_warning_once_then_past_lifetime_one_alert_and_exactly_one_dsn(world):
    await world.start()
    await world.send(mail())
    await world.advance(3600)
    assert world.alerts == [("mail_delayed", True)]
    await world.advance(3600)
    assert world.alerts == [("mail_delayed", True)]  # warned once per message

    world.smarthost_up()
    world.smarthost.rcpt_replies[GUEST_MAIL] = "451 4.2.2 Mailbox full"  # the bounce itself can go
    world.clock.now = T0 + 4 * 86400 + 1
    await world.worker.run_due()
    await world.advance(0)
    await world.advance(7200)
    (bounce,) = world.smarthost.deliveries
    assert bounce[0] in ("", "<>") and bounce[1] == [SENDER]
    assert b"Status: 4.4.7" in bounce[2] and b"delivery time expired" in bounce[2]
    assert [kind for kind, _ in world.alerts] == ["mail_delayed", "mail_failed"]
    assert world.queued() == []


@pytest.mark.parametrize("case", ["null sender", "auto-submitted", "delivery report", "no-reply sender"])
async def test_a_bounce_of_a_bounce_is_never_sent(tmp_path, case):
    world = World(tmp_path, no_reply_addresses=["No-Reply@Hotel.example"])
    sender, extra, content_type, body = SENDER, "", "text/plain; charset=utf-8", TEXT
    if case == "null sender":
        sender = ""
    elif case == "auto-submitted":
        extra = "Auto-Submitted: auto-replied\r\n"
    elif case == "delivery report":
        content_type, body = 'multipart/report; report-type=delivery-status; boundary="b"', REPORT
    else:
        sender = "no-reply@hotel.example"
    world.smarthost_up()
    world.smarthost.rcpt_replies[OTHER] = "550 5.1.1 No such user"
    try:
        await world.start()
        await world.send(mail(extra=extra, content_type=content_type, body=body), sender=sender, recipients=(GUEST_MAIL, OTHER))
        await world.advance(3600)
        assert [d[1] for d in world.smarthost.deliveries] == [[GUEST_MAIL]]  # no bounce went anywhere
        assert world.alerts == [("mail_failed", True)]  # the operator still hears of it
        assert world.queued() == []
    finally:
        await world.close()


async def test_below_the_disk_reserve_the_relay_answers_452(tmp_path):
    world = World(tmp_path, disk_reserve=10**18)
    world.smarthost_up()
    try:
        await world.start()
        with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
            await world.send(mail())
        assert refused.value.code == 452
        assert world.queued() == [] and world.smarthost.deliveries == []
    finally:
        await world.close()


async def test_queue_files_hold_no_guest_data_in_clear(world):
    await world.start()
    await world.send(mail())
    (path,) = world.worker.queue.directory.glob("*.mail")
    on_disk = path.read_bytes()
    for value in (GUEST, GUEST_MAIL, "Oliver", "BK-20931", "1111", "booking-7"):
        assert value.encode() not in on_disk
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(world.worker.queue.directory.stat().st_mode) == 0o700
    assert GUEST_MAIL in [r.address for r in world.queued()[0].recipients]  # the key opens it


async def test_a_mail_loop_is_refused(world):
    world.smarthost_up()
    await world.start()
    hops = "".join(f"Received: from relay{i}.example by relay{i + 1}.example; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
                   for i in range(31))
    with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
        await world.send(mail(extra=hops))
    assert refused.value.code == 554
    assert world.queued() == [] and world.smarthost.deliveries == []
    # Our own Received header is added, so a loop through us is counted.
    await world.send(mail())
    assert parsed(world.smarthost.deliveries[0][2])["Received"].startswith("from ")


async def test_the_smarthost_is_never_the_relay_itself(tmp_path):
    port = free_port()
    with pytest.raises(ValueError, match="relay itself"):
        SmtpRelaySettings(port=port, smarthost=SmarthostSettings(host="localhost", port=port))
    # Another address of this host, on a wildcard listener: found at start.
    settings = SmtpRelaySettings(listen_host="0.0.0.0", port=port,
                                 smarthost=SmarthostSettings(host="127.0.0.2", port=port))
    with pytest.raises(StartupRefused, match="relay itself"):
        await start_smtp_relay(settings, Redactor(NotificationsPolicy()), delivery=delivery_for(settings, tmp_path))
    with socket.socket() as probe:  # and nothing stays listening
        probe.bind(("0.0.0.0", port))


def cli(data_dir: Path, smarthost_port: int, *args: str) -> tuple[int, str]:
    env = {"PMS_GATEWAY_DATA_DIR": str(data_dir), "PMS_GATEWAY_POLICY_PATHS": "[]",
           "PMS_GATEWAY_SMTP_RELAY__SMARTHOST__PORT": str(smarthost_port)}
    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, result.output


async def test_cli_queue_retry_and_drop(world):
    load_or_create_keys(key_path(world.data_dir))
    await world.start()
    await world.send(mail())
    await world.send(mail())
    keep, drop = world.worker.queue.ids()
    metrics = Metrics()
    metrics.watch_mail_queue(world.worker.queue, clock=lambda: T0 + 90)
    exported = generate_latest(metrics.registry).decode()
    assert "gateway_mail_queue_depth 2.0" in exported and "gateway_mail_queue_oldest_age_seconds" in exported
    world.server.close()
    await world.server.wait_closed()  # no gateway delivers now: the CLI does

    code, output = await asyncio.to_thread(cli, world.data_dir, world.port, "mail", "queue")
    assert code == 0 and keep in output and drop in output and "1 pending" in output
    assert GUEST_MAIL not in output and GUEST not in output

    code, output = await asyncio.to_thread(cli, world.data_dir, world.port, "mail", "drop", drop, "--operator", "it")
    assert code == 0 and not (world.worker.queue.directory / f"{drop}.mail").exists()

    world.smarthost_up()
    code, output = await asyncio.to_thread(cli, world.data_dir, world.port, "mail", "retry", "--all")
    assert code == 0 and "delivered" in output, output
    assert len(world.smarthost.deliveries) == 1 and world.worker.queue.ids() == []
    code, output = await asyncio.to_thread(cli, world.data_dir, world.port, "mail", "retry", keep)
    assert code == 1 and "no queued message" in output
    code, output = await asyncio.to_thread(cli, world.data_dir, world.port, "audit", "query", "--format", "jsonl")
    assert '"mail_drop"' in output and '"mail_retry"' in output and drop in output


async def test_starttls_to_the_smarthost_is_verified(tmp_path):
    import ssl

    cert, key = self_signed_cert(tmp_path / "smarthost", ["localhost", "127.0.0.1"])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    for ca_file, delivered in ((None, False), (str(cert), True)):
        world = World(tmp_path / f"ca-{delivered}")
        world.settings = world.settings.model_copy(update={"smarthost": SmarthostSettings(
            host="127.0.0.1", port=world.port, start_tls=True, ca_file=ca_file, timeout=5)})
        world.controller = world.smarthost.start(world.port, tls_context=context, require_starttls=True)
        try:
            await world.start()
            await world.send(mail())
            assert bool(world.smarthost.deliveries) is delivered
            assert len(world.queued()) == (0 if delivered else 1)
        finally:
            await world.close()


@pytest.mark.slow  # two real gateway starts
async def test_sigkill_with_the_smarthost_down_then_restart_delivers_exactly_once(tmp_path):
    """The real `pms-gateway run`: accepts a mail while the smarthost is down, is killed
    with SIGKILL, restarted; the smarthost comes back; the mail arrives, redacted, once."""
    from tests.processes import gateway_process
    from tests.test_run_outbound_e2e import wait_port

    smarthost, smarthost_port, relay_port = Smarthost(), free_port(), free_port()
    config = {"smtp_relay": {"enabled": True, "port": relay_port,
                             "smarthost": {"host": "127.0.0.1", "port": smarthost_port, "timeout": 5}}}
    with gateway_process(tmp_path, "http://127.0.0.1:9", {}, config) as (_, gateway):
        await wait_port(relay_port, gateway)
        _, reply = await aiosmtplib.send(mail(), sender=SENDER, recipients=[GUEST_MAIL], hostname="127.0.0.1",
                                         port=relay_port, timeout=10, start_tls=False)
        assert reply.startswith("2.0.0 Queued as")
        gateway.kill()
        gateway.wait(10)
    controller = smarthost.start(smarthost_port)
    try:
        with gateway_process(tmp_path, "http://127.0.0.1:9", {}, config) as (_, gateway):
            await wait_port(relay_port, gateway)
            async with asyncio.timeout(15):
                while not smarthost.deliveries or list((tmp_path / "var" / "queue").glob("*.mail")):
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)  # time for a duplicate, if there were one
            gateway.terminate()
            gateway.wait(20)
    finally:
        controller.stop()
    (delivery,) = smarthost.deliveries
    assert CARD.encode() not in delivery[2] and CARD.replace(" ", "").encode() not in delivery[2]
    assert parsed(delivery[2])["Message-ID"] == "<booking-7@hotel.example>"
    assert list((tmp_path / "var" / "queue").glob("*.mail")) == []  # delivered: deleted from disk
