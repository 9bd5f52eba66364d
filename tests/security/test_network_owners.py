"""Hosting, VPN and Tor detection from free data (issue 12 item 1).

A real gateway in front of the demo PMS, with MaxMind's free-format test databases
(GeoLite2-ASN, no paid Anonymous-IP file), a Tor exit list installed the operator's way,
and a fake RDAP server on loopback answering with real registry answers
(tests/data/rdap/rdap.json, from the ipwhois project). Whether the RDAP lookup stays off
the login's path is read from the fake server's own log of events, not from wall time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import pytest
from aiohttp import web
from typer.testing import CliRunner

from gateway.cli import app as cli_app
from gateway.policy import load_policy
from gateway.policy.schema import Policy
from gateway.risk.captcha import CaptchaGate
from gateway.risk.ownership import install_tor_list, parse_tor_list, tor_list_path
from gateway.risk.rdap import cache_key
from tests.harness import free_port, serve_app
from tests.login_env import login_env
from tests.test_captcha import RemoteBrowser, captcha_location

DATA = Path(__file__).resolve().parent.parent / "data"
RDAP_ANSWERS = {ip: entry["response"] for ip, entry in json.loads((DATA / "rdap" / "rdap.json").read_text()).items()}
GOOGLE_BY_RDAP = "74.125.225.229"  # not in the ASN test database; RDAP says "GOOGLE", registrant Google Inc.
TRIARA_BY_RDAP = "200.57.141.161"  # RDAP: Triara.com, S.A. de C.V. (not on the shipped list)
GEOIP_ONLY = {
    "trusted_proxies": "[127.0.0.0/8]",
    "geoip__asn": str(DATA / "geoip" / "GeoLite2-ASN-Test.mmdb"),  # the free file only
}
TOR_EXIT = "185.220.101.7"


class FakeRdap:
    """`/ip/<address>` from the fixture file; logs `received`/`answered` in its own order;
    `hold` keeps every answer until released (a slow registry)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.hold: asyncio.Event | None = None
        self.status = 200

    async def answer(self, request: web.Request) -> web.StreamResponse:
        ip = request.match_info["ip"]
        self.events.append(("received", ip))
        if self.hold is not None:
            await self.hold.wait()
        if self.status != 200 or ip not in RDAP_ANSWERS:
            self.events.append(("failed", ip))
            return web.json_response({"errorCode": 404}, status=self.status if self.status != 200 else 404)
        self.events.append(("answered", ip))
        return web.json_response(RDAP_ANSWERS[ip], content_type="application/rdap+json")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/ip/{ip}", self.answer)
        return app


def policy_with(rdap_url: str | None, **risk) -> Policy:
    data = load_policy("policies/default.yaml").model_dump(mode="json")
    data["captcha"] = {**data["captcha"], "difficulty": 2000}
    data["risk"] = {**data["risk"], **({"rdap_url": rdap_url} if rdap_url else {}), **risk}
    return Policy.model_validate(data)


@contextlib.asynccontextmanager
async def rdap_env(tmp_path, policy: Policy):
    async with login_env(tmp_path, policy=policy, config_overrides=GEOIP_ONLY) as env:
        yield env, next(a for a in env.addons if isinstance(a, CaptchaGate))


@pytest.fixture
async def fake_rdap():
    server = FakeRdap()
    async with serve_app(server.app()) as url:
        yield server, url
        if server.hold is not None:
            server.hold.set()  # let held answers finish before the server stops


@pytest.fixture
async def browsers():
    opened = []

    def make(env, ip):
        opened.append(RemoteBrowser(env, ip))
        return opened[-1]

    yield make
    for browser in opened:
        await browser.close()


async def test_address_known_only_by_rdap_as_hosting_gets_the_captcha_at_its_next_login(tmp_path, fake_rdap, browsers):
    server, url = fake_rdap
    async with rdap_env(tmp_path, policy_with(url)) as (env, gate):
        first = browsers(env, GOOGLE_BY_RDAP)
        status, headers, _ = await first.password("alice")
        assert headers["Location"] == "/_gateway/2fa"  # nothing known yet: not held up
        await gate.rdap.drain()
        assert server.events == [("received", GOOGLE_BY_RDAP), ("answered", GOOGLE_BY_RDAP)]
        assert await gate.reason(GOOGLE_BY_RDAP, "bob", env.policy()) == "hosting provider"
        owner = await gate.owner(GOOGLE_BY_RDAP, env.policy())
        assert owner.name == "GOOGLE" and owner.sources == ("rdap",)

        status, headers, _ = await browsers(env, GOOGLE_BY_RDAP).password("bob")
        assert captcha_location(headers) == "/login"
        assert "bob" not in await env.pms_users_alive()
        status, _, _ = await browsers(env, GOOGLE_BY_RDAP).password("manager")
        assert len(server.events) == 2  # cached: the registry is asked once a day, not per login


async def test_a_slow_rdap_server_does_not_hold_up_the_login(tmp_path, fake_rdap, browsers):
    server, url = fake_rdap
    server.hold = asyncio.Event()
    async with rdap_env(tmp_path, policy_with(url)) as (env, gate):
        status, headers, _ = await browsers(env, TRIARA_BY_RDAP).password("alice")
        # The login was answered while the registry still sat on its answer.
        assert headers["Location"] == "/_gateway/2fa"
        for _ in range(100):  # the lookup started in the background (no wall-time bound asserted)
            if server.events:
                break
            await asyncio.sleep(0.01)
        assert server.events == [("received", TRIARA_BY_RDAP)]
        status, headers, _ = await browsers(env, TRIARA_BY_RDAP).password("bob")
        assert headers["Location"] == "/_gateway/2fa"
        assert server.events == [("received", TRIARA_BY_RDAP)]  # still unanswered, one lookup at a time
        server.hold.set()
        await gate.rdap.drain()
        assert server.events[-1] == ("answered", TRIARA_BY_RDAP)


async def test_the_operator_names_a_hosting_owner_rdap_reports(tmp_path, fake_rdap, browsers):
    server, url = fake_rdap
    policy = policy_with(url, networks=[{"name": r"\btriara\b", "kind": "hosting"}])
    async with rdap_env(tmp_path, policy) as (env, gate):
        await browsers(env, TRIARA_BY_RDAP).password("alice")
        await gate.rdap.drain()
        status, headers, _ = await browsers(env, TRIARA_BY_RDAP).password("bob")
        assert captcha_location(headers) == "/login"


@pytest.mark.parametrize("outage", ["refused", "error", "slow"])
async def test_rdap_down_or_slow_changes_nothing_on_the_login_path(tmp_path, fake_rdap, browsers, outage):
    server, url = fake_rdap
    risk = {"rdap_timeout": "1s"}
    if outage == "refused":
        url = f"http://127.0.0.1:{free_port()}"  # nobody listens
    elif outage == "error":
        server.status = 503
    else:
        server.hold = asyncio.Event()  # never answers within rdap_timeout
    async with rdap_env(tmp_path, policy_with(url, **risk)) as (env, gate):
        for user in ("alice", "bob"):
            status, headers, _ = await browsers(env, GOOGLE_BY_RDAP).password(user)
            assert headers["Location"] == "/_gateway/2fa"
        await gate.rdap.drain()
        failure = await env.services.store.get(cache_key(GOOGLE_BY_RDAP, env.policy()))
        assert json.loads(failure) == {"failed": True}
        assert 0 < await env.services.store.ttl(cache_key(GOOGLE_BY_RDAP, env.policy())) <= 300  # briefly
        received = len([e for e in server.events if e[0] == "received"])
        status, headers, _ = await browsers(env, GOOGLE_BY_RDAP).password("manager")
        assert headers["Location"] == "/_gateway/2fa"
        await gate.rdap.drain()
        assert len([e for e in server.events if e[0] == "received"]) == received  # not asked again


async def test_rdap_off_asks_nobody(tmp_path, fake_rdap, browsers):
    server, url = fake_rdap
    async with rdap_env(tmp_path, policy_with(url, rdap=False)) as (env, gate):
        await browsers(env, GOOGLE_BY_RDAP).password("alice")
        await gate.rdap.drain()
        await browsers(env, GOOGLE_BY_RDAP).password("bob")
        assert server.events == []


async def test_a_tor_exit_from_the_installed_list_gets_the_captcha(tmp_path, browsers):
    exit_list = tmp_path / "torbulkexitlist"
    exit_list.write_text(f"{TOR_EXIT}\n171.25.193.25\n")
    async with rdap_env(tmp_path, policy_with(None, rdap=False)) as (env, gate):
        config = tmp_path / "gateway.yaml"
        config.write_text(f"data_dir: {env.config.data_dir}\nupstream:\n  url: {env.pms_url}\n")
        result = CliRunner().invoke(cli_app, ["risk", "tor-list", "update", str(exit_list), "--config", str(config)])
        assert result.exit_code == 0, result.output
        assert "2 Tor exit addresses" in result.output
        assert tor_list_path(env.config.data_dir).exists()
        status, headers, _ = await browsers(env, TOR_EXIT).password("alice")
        assert captcha_location(headers) == "/login"
        assert await gate.reason(TOR_EXIT, "alice", env.policy()) == "tor"
        assert await env.pms_sessions() == []
        status, headers, _ = await browsers(env, "89.160.20.112").password("bob")
        assert headers["Location"] == "/_gateway/2fa"  # an ordinary address is not


def test_tor_list_formats_and_bad_input(tmp_path):
    detailed = "ExitNode 0011BD2485AD45D984EC4159C88FC066E5E3300E\nPublished 2024-05-01 10:00:00\n" \
               "LastStatus 2024-05-01 11:00:00\nExitAddress 162.247.74.201 2024-05-01 11:02:01\n"
    assert parse_tor_list(detailed) == ["162.247.74.201"]
    assert parse_tor_list("# comment\n1.2.3.4\n\n2001:db8::1\n") == ["1.2.3.4", "2001:db8::1"]
    with pytest.raises(ValueError, match="line 2: 'not-an-address'"):
        parse_tor_list("1.2.3.4\nnot-an-address\n")
    bad = tmp_path / "wrong.html"
    bad.write_text("<html>\n")
    with pytest.raises(ValueError):
        install_tor_list(bad, tmp_path / "var")
    assert not tor_list_path(tmp_path / "var").exists()


@pytest.mark.parametrize(
    "ip, policy_changes, reason",
    [
        ("1.0.0.1", {}, "hosting provider"),  # AS15169 "Google Inc." in GeoLite2-ASN: the shipped list
        ("67.43.149.1", {}, "hosting provider"),  # AS35908 with no organisation name: by number
        ("89.160.20.112", {}, None),  # Bredband2, a home ISP
        ("89.160.20.112", {"risk": {"networks": [{"asn": 29518, "kind": "vpn"}]}}, "vpn"),  # operator's entry
        ("89.160.20.112", {"risk": {"networks": [{"name": "bredband", "kind": "proxy"}]}}, "public proxy"),
        ("8.8.4.4", {}, None),  # unknown to every source: allowed by default ...
        ("8.8.4.4", {"captcha": {"on_unknown": "captcha"}}, "nothing known about the address"),  # ... or not
        ("89.160.20.112", {"captcha": {"on_unknown": "captcha"}}, None),  # its owner is known
        ("192.168.10.7", {"captcha": {"on_unknown": "captcha"}}, None),  # the hotel's own network
    ],
)
async def test_free_data_reasons(tmp_path, ip, policy_changes, reason):
    data = policy_with(None, rdap=False).model_dump(mode="json")
    for section, values in policy_changes.items():
        data[section] = {**data[section], **values}
    async with rdap_env(tmp_path, Policy.model_validate(data)) as (env, gate):
        assert await gate.reason(ip, "alice", env.policy()) == reason


def test_a_bad_network_entry_is_refused_with_its_line(tmp_path):
    from gateway.policy import ConfigError

    path = tmp_path / "policy.yaml"
    path.write_text("risk:\n  networks:\n    - {asn: 64500, name: x}\n")
    with pytest.raises(ConfigError, match=r"policy.yaml:3.*exactly one of"):
        load_policy(str(path))
