"""The demo PMS must behave like a real legacy PMS: the gateway's tests rely on it."""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
import re

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiosmtpd.controller import Controller
from yarl import URL

from gateway.demo import DEMO_USERS, DemoSettings, create_app
from gateway.demo.app import STATE
from gateway.demo.streams import pattern_bytes
from tests.harness import free_port

SMS_SID = "ACtest0123456789"
SMS_TOKEN = "test-token"
SMS_FROM = "+15005550006"




@pytest.fixture
async def make_pms():
    clients: list[TestClient] = []

    async def make(**overrides) -> TestClient:
        unreachable = free_port()
        settings = DemoSettings(
            **{
                "smtp_port": unreachable,
                "sms_api_url": f"http://127.0.0.1:{unreachable}",
                "sms_account_sid": SMS_SID,
                "sms_auth_token": SMS_TOKEN,
                "sms_from": SMS_FROM,
                "public_url": "https://pms.hotel.example",
                "send_timeout": 5.0,
                **overrides,
            }
        )
        client = TestClient(TestServer(create_app(settings)))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def pms(make_pms) -> TestClient:
    return await make_pms()


@pytest.fixture
async def smtp_server():
    """A real SMTP server; yields (port, list of received envelopes)."""
    received = []

    class Collect:
        async def handle_DATA(self, server, session, envelope):
            received.append(envelope)
            return "250 Message accepted for delivery"

    controller = Controller(Collect(), hostname="127.0.0.1", port=free_port())
    await asyncio.to_thread(controller.start)
    yield controller.port, received
    await asyncio.to_thread(controller.stop)


@pytest.fixture
async def sms_provider():
    """A Twilio-shaped SMS API; yields (base URL, list of accepted forms)."""
    received = []

    async def create_message(request: web.Request) -> web.Response:
        try:
            auth = aiohttp.BasicAuth.decode(request.headers.get("Authorization", ""))
        except ValueError:
            return web.json_response({"message": "Authenticate"}, status=401)
        if (auth.login, auth.password) != (SMS_SID, SMS_TOKEN):
            return web.json_response({"message": "Authenticate"}, status=401)
        if request.match_info["sid"] != SMS_SID:
            return web.json_response({"message": "Not found"}, status=404)
        received.append(dict(await request.post()))
        return web.json_response({"sid": "SM0001", "status": "queued"}, status=201)

    app = web.Application()
    app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", create_message)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("")).rstrip("/"), received
    await server.close()


def login_token(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


async def login(client: TestClient, user: str, password: str, **extra) -> aiohttp.ClientResponse:
    page = await client.get("/login")
    token = login_token(await page.text())
    data = {"username": user, "password": password, "csrf_token": token, **extra}
    return await client.post("/login", data=data, allow_redirects=False)


async def logged_in(client: TestClient, user: str = "alice") -> TestClient:
    password = {name: pw for name, pw, _ in DEMO_USERS}[user]
    response = await login(client, user, password)
    assert response.status == 302
    return client


def cookie(client: TestClient, name: str) -> str | None:
    morsel = client.session.cookie_jar.filter_cookies(client.make_url("/")).get(name)
    return morsel.value if morsel else None


async def live_users(client: TestClient) -> list[str]:
    return [s["user"] for s in await (await client.get("/_demo/sessions")).json()]


# --- login ---------------------------------------------------------------------------


async def test_login_page_has_labelled_form_and_prelogin_cookie(pms):
    response = await pms.get("/login")
    html = await response.text()
    assert response.status == 200
    assert "PMSPRELOGIN" in response.cookies
    assert response.cookies["PMSPRELOGIN"]["httponly"]
    for field in ("username", "password"):
        assert f'<label for="{field}">' in html
        assert f'name="{field}"' in html
    assert 'name="csrf_token"' in html
    assert "Hotel Demo" in html
    # A second tab gets the same cookie and token, so the first tab's form stays valid.
    again = await pms.get("/login")
    assert "PMSPRELOGIN" not in again.cookies or again.cookies["PMSPRELOGIN"].value == (
        response.cookies["PMSPRELOGIN"].value
    )
    assert login_token(await again.text()) == login_token(html)


@pytest.mark.parametrize("token", [None, "forged", "other-browser"])
async def test_login_without_valid_csrf_token_is_forbidden(pms, make_pms, token):
    await pms.get("/login")
    if token == "other-browser":
        # A real token, but bound to another browser's pre-login cookie.
        other = await make_pms()
        token = login_token(await (await other.get("/login")).text())
    data = {"username": "alice", "password": "alice-demo-pw"}
    if token:
        data["csrf_token"] = token
    response = await pms.post("/login", data=data, allow_redirects=False)
    assert response.status == 403
    assert "Invalid CSRF token" in await response.text()
    assert await live_users(pms) == []


async def test_login_csrf_needs_prelogin_cookie(pms):
    token = login_token(await (await pms.get("/login")).text())
    pms.session.cookie_jar.clear()
    response = await pms.post(
        "/login", data={"username": "alice", "password": "alice-demo-pw", "csrf_token": token}
    )
    assert response.status == 403


@pytest.mark.parametrize(("user", "password"), [("alice", "wrong"), ("mallory", "alice-demo-pw")])
async def test_failed_login_answers_200_with_form_and_error(pms, user, password):
    response = await login(pms, user, password)
    html = await response.text()
    assert response.status == 200
    assert "Invalid username or password" in html
    assert 'name="password"' in html
    assert "PMSSESSID" not in response.cookies
    # The form stays usable: its token still matches the pre-login cookie.
    retry = await pms.post(
        "/login",
        data={"username": "alice", "password": "alice-demo-pw", "csrf_token": login_token(html)},
        allow_redirects=False,
    )
    assert retry.status == 302


async def test_login_sets_session_cookies_and_redirects(pms):
    response = await login(pms, "alice", "alice-demo-pw")
    assert response.status == 302
    assert response.headers["Location"] == "/reservations"
    session_cookie = response.cookies["PMSSESSID"]
    assert session_cookie["httponly"]
    assert session_cookie["path"] == "/"
    assert len(session_cookie.value) >= 32
    csrf_cookie = response.cookies["pms_csrf"]
    assert not csrf_cookie["httponly"]
    assert csrf_cookie["path"] == "/"
    assert await live_users(pms) == ["alice"]
    sessions = await (await pms.get("/_demo/sessions")).json()
    expected_hash = hashlib.sha256(session_cookie.value.encode()).hexdigest()[:16]
    assert sessions[0]["session_hash"] == expected_hash

    page = await pms.get("/reservations")
    assert page.status == 200
    assert "Logged in as <b>alice</b>" in await page.text()


@pytest.mark.parametrize(
    ("next_path", "location"),
    [
        ("/reservations/1003", "/reservations/1003"),
        ("/reports?week=2", "/reports?week=2"),
        ("//evil.example/", "/reservations"),
        ("/\\evil.example", "/reservations"),
        ("https://evil.example/", "/reservations"),
        ("javascript:alert(1)", "/reservations"),
    ],
)
async def test_login_redirects_only_to_safe_next(pms, next_path, location):
    response = await login(pms, "bob", "bob-demo-pw", next=next_path)
    assert response.headers["Location"] == location


async def test_next_is_carried_through_the_login_form(pms):
    response = await pms.get("/reservations/1004", allow_redirects=False)
    assert response.status == 302
    location = URL(response.headers["Location"])
    assert (location.path, location.query["next"]) == ("/login", "/reservations/1004")
    html = await (await pms.get(response.headers["Location"])).text()
    data = {
        "username": "alice",
        "password": "alice-demo-pw",
        "csrf_token": login_token(html),
        "next": re.search(r'name="next" value="([^"]+)"', html).group(1),
    }
    response = await pms.post("/login", data=data, allow_redirects=False)
    assert response.headers["Location"] == "/reservations/1004"


# --- sessions and access -------------------------------------------------------------


async def test_index_redirects_by_session(pms):
    response = await pms.get("/", allow_redirects=False)
    assert response.headers["Location"] == "/login"
    await logged_in(pms)
    response = await pms.get("/", allow_redirects=False)
    assert response.headers["Location"] == "/reservations"


@pytest.mark.parametrize("path", ["/reservations", "/reservations/1001", "/reports"])
async def test_pages_require_a_session(pms, path):
    response = await pms.get(path, allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"].startswith("/login?next=")


async def test_api_requires_a_session(pms):
    response = await pms.get("/api/refresh")
    assert response.status == 401
    response = await pms.post("/api/reservations/1001/confirm", headers={"X-CSRF-Token": "x"})
    assert response.status == 401


async def test_reports_are_for_managers_only(make_pms):
    alice = await logged_in(await make_pms(), "alice")
    response = await alice.get("/reports")
    assert response.status == 403
    assert "managers only" in await response.text()
    # The menu offers Reports to everyone, as many PMSs do; the gateway's `hide_links` hides it.
    assert 'href="/reports"' in await (await alice.get("/reservations")).text()

    manager = await logged_in(await make_pms(), "manager")
    response = await manager.get("/reports")
    html = await response.text()
    assert response.status == 200
    assert "Occupancy report" in html
    assert 'href="/reports"' in html
    assert re.search(r"\d+ / 30", html)


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_logout_kills_the_session(pms, method):
    await logged_in(pms)
    old_sessid = cookie(pms, "PMSSESSID")
    assert await live_users(pms) == ["alice"]

    response = await pms.request(method, "/logout", allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"] == "/login"
    assert await live_users(pms) == []
    assert cookie(pms, "PMSSESSID") in (None, "")

    # Replaying the old cookie does not bring the session back.
    pms.session.cookie_jar.update_cookies({"PMSSESSID": old_sessid})
    response = await pms.get("/reservations", allow_redirects=False)
    assert response.status == 302


async def test_sessions_expire_when_idle(make_pms):
    client = await make_pms(session_idle_seconds=60)
    state = client.app[STATE]
    now = [1_000_000.0]
    state.clock = lambda: now[0]
    await logged_in(client)

    now[0] += 59
    assert (await client.get("/reservations", allow_redirects=False)).status == 200
    now[0] += 59  # idle time counts from the last request
    assert await live_users(client) == ["alice"]
    now[0] += 2
    assert await live_users(client) == []
    assert (await client.get("/reservations", allow_redirects=False)).status == 302


async def test_each_login_gets_its_own_session(make_pms):
    pms = await make_pms()
    await logged_in(pms, "alice")
    # A second browser (own cookie jar) on the same server; closing it must not stop the
    # server, so only its HTTP session is closed.
    other = TestClient(pms.server)
    await other.start_server()
    try:
        await logged_in(other, "bob")
        assert sorted(await live_users(pms)) == ["alice", "bob"]
        await other.get("/logout")
        assert await live_users(pms) == ["alice"]
    finally:
        await other.session.close()


# --- pages ---------------------------------------------------------------------------


def luhn_ok(number: str) -> bool:
    digits = [int(d) for d in reversed(number)]
    total = sum(digits[0::2]) + sum(sum(divmod(2 * d, 10)) for d in digits[1::2])
    return total % 10 == 0


async def test_reservation_list_and_detail(pms):
    await logged_in(pms)
    html = await (await pms.get("/reservations")).text()
    links = set(re.findall(r'href="/reservations/(\d+)"', html))
    assert len(links) == 25
    assert '<script src="/static/refresh.js" defer></script>' in html
    assert "<script>" not in html  # no inline scripts

    detail = await pms.get("/reservations/1001")
    html = await detail.text()
    assert detail.status == 200
    for text in ("Oliver Bennett", "oliver.bennett@example.co.uk", "+44 20 7946 0018",
                 "4111111111111111", "533401872", "12/04/1978"):
        assert text in html
    assert f'name="csrf_token" value="{cookie(pms, "pms_csrf")}"' in html
    assert (await pms.get("/reservations/9999")).status == 404


async def test_seeded_guest_data_is_realistic(pms):
    reservations = pms.app[STATE].reservations.values()
    assert len(reservations) == 25
    assert all(luhn_ok(r.card_number) for r in reservations)
    prefixes = {re.match(r"\+(\d+) ", r.phone).group(1) for r in reservations}
    assert prefixes == {"44", "33", "49", "420", "1"}
    assert {r.card_number[:1] for r in reservations} >= {"3", "4", "5"}


async def test_static_files_are_served(pms):
    css = await pms.get("/static/pms.css")
    assert css.status == 200
    assert "text/css" in css.headers["Content-Type"]
    js = await pms.get("/static/refresh.js")
    assert "/api/refresh" in await js.text()


async def test_refresh_api(pms):
    await logged_in(pms)
    data = await (await pms.get("/api/refresh")).json()
    assert data["new_bookings"] == pms.app[STATE].new_bookings() > 0
    assert data["server_time"].endswith("+00:00")


# --- confirmations -------------------------------------------------------------------


async def test_confirmation_is_sent_by_email_and_sms(make_pms, smtp_server, sms_provider):
    smtp_port, mails = smtp_server
    sms_url, texts = sms_provider
    pms = await logged_in(await make_pms(smtp_port=smtp_port, sms_api_url=sms_url))

    response = await pms.post(
        "/reservations/1002/confirm", data={"csrf_token": cookie(pms, "pms_csrf")}
    )
    html = await response.text()
    assert response.status == 200
    assert "E-mail: sent" in html
    assert "SMS: sent" in html

    [envelope] = mails
    assert envelope.rcpt_tos == ["amelie.laurent@example.fr"]
    message = email.message_from_bytes(envelope.content, policy=email.policy.default)
    assert message["To"] == "Amélie Laurent <amelie.laurent@example.fr>"
    assert message["Subject"] == "Booking confirmation 1002 – Amélie Laurent"
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(("plain",)).get_content()
    html_body = message.get_body(("html",)).get_content()
    for body in (text, html_body):
        for leaked in ("Amélie Laurent", "5555555555554444", "18AV52731", "+33 1 99 00 12 34",
                       "https://pms.hotel.example/guest/booking/1002/"
                       + pms.app[STATE].reservations[1002].guest_secret):  # the guest's own page
            assert leaked in body

    [sms] = texts
    assert sms["To"] == "+33199001234"
    assert sms["From"] == SMS_FROM
    assert sms["Body"].startswith("Dear Amélie Laurent, your booking 1002 at Hotel Demo from ")
    assert "5555555555554444" in sms["Body"]
    assert pms.app[STATE].reservations[1002].status == "Confirmed"


async def test_confirmation_api_variant(make_pms, smtp_server, sms_provider):
    smtp_port, mails = smtp_server
    sms_url, texts = sms_provider
    pms = await logged_in(await make_pms(smtp_port=smtp_port, sms_api_url=sms_url))
    response = await pms.post(
        "/api/reservations/1003/confirm", headers={"X-CSRF-Token": cookie(pms, "pms_csrf")}
    )
    assert response.status == 200
    assert await response.json() == {"email": "sent", "sms": "sent"}
    assert len(mails) == 1
    assert len(texts) == 1


async def test_wrong_sms_credentials_are_reported(make_pms, smtp_server, sms_provider):
    smtp_port, _ = smtp_server
    sms_url, texts = sms_provider
    pms = await logged_in(
        await make_pms(smtp_port=smtp_port, sms_api_url=sms_url, sms_auth_token="wrong")
    )
    response = await pms.post(
        "/api/reservations/1003/confirm", headers={"X-CSRF-Token": cookie(pms, "pms_csrf")}
    )
    assert await response.json() == {"email": "sent", "sms": "failed: HTTP 401 from SMS API"}
    assert texts == []


async def test_unreachable_endpoints_are_reported_not_raised(pms):
    await logged_in(pms)
    response = await pms.post(
        "/reservations/1001/confirm", data={"csrf_token": cookie(pms, "pms_csrf")}
    )
    html = await response.text()
    assert response.status == 200
    assert "E-mail: failed (" in html
    assert "SMS: failed (" in html
    assert pms.app[STATE].reservations[1001].status == "New"

    response = await pms.post(
        "/api/reservations/1001/confirm", headers={"X-CSRF-Token": cookie(pms, "pms_csrf")}
    )
    results = await response.json()
    assert results["email"].startswith("failed: ")
    assert results["sms"].startswith("failed: ")


@pytest.mark.parametrize("path", ["/reservations/1001/confirm", "/api/reservations/1001/confirm"])
async def test_confirmation_requires_the_session_csrf_token(pms, path):
    await logged_in(pms)
    response = await pms.post(path, data={"csrf_token": "forged"})
    assert response.status == 403
    assert "Invalid CSRF token" in await response.text()
    response = await pms.post(path)
    assert response.status == 403


# --- streaming endpoints -------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 65_536, 3 * 1024 * 1024 + 7])
async def test_download_streams_deterministic_bytes(pms, size):
    response = await pms.get(f"/download/{size}")
    assert response.status == 200
    assert response.headers.get("Transfer-Encoding") == "chunked"
    body = await response.read()
    assert len(body) == size
    assert hashlib.sha256(body).digest() == hashlib.sha256(pattern_bytes(size)).digest()


async def test_upload_counts_and_hashes_a_streamed_body(pms):
    chunks = [bytes([i]) * 100_000 for i in range(30)]

    async def body():
        for chunk in chunks:
            yield chunk

    response = await pms.post("/upload", data=body())
    expected = b"".join(chunks)
    assert await response.json() == {
        "bytes": len(expected),
        "sha256": hashlib.sha256(expected).hexdigest(),
    }


async def test_websocket_echo(pms):
    async with pms.ws_connect("/ws/echo") as ws:
        await ws.send_str("hello desk")
        assert await ws.receive_str() == "hello desk"
        await ws.send_bytes(b"\x00\x01\xff")
        assert await ws.receive_bytes() == b"\x00\x01\xff"


async def test_compress_answers_gzip_when_the_browser_accepts_it(make_pms):
    pms = await make_pms(compress=True)
    response = await pms.get("/login", headers={"Accept-Encoding": "gzip, deflate"}, auto_decompress=False)
    raw = await response.read()
    assert response.headers["Content-Encoding"] == "gzip" and raw.startswith(b"\x1f\x8b")
    response = await pms.get("/login", headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in response.headers and "<form" in await response.text()
    plain = await make_pms()  # the default answers uncompressed
    response = await plain.get("/login", headers={"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in response.headers
