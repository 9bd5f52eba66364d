"""An API client recognised by its header (`header_pattern`) sends that header once.

Found by the attack on issue 8: the gateway judged the first `Authorization` header
against the client's pattern and forwarded every one. Two of them, the door-lock
system's token first and a staff member's own `Basic` credentials second, were one API
client to the gateway and possibly a person to the PMS (many servers take the last
value, or join them). A request with the header more than once is refused with 400.
"""

from __future__ import annotations

import pytest

from tests.harness import serve_app
from tests.login_env import login_env
from tests.security.hostile import send
from tests.test_api_clients import policy_with_client
from tests.upstream_app import create_upstream

PMS_TOKEN = "Token " + "ab" * 20


@pytest.mark.parametrize("second", ["Basic YWxpY2U6YWxpY2UtZGVtby1wdw==", PMS_TOKEN])
async def test_the_recognising_header_twice_is_refused(tmp_path, second):
    policy = policy_with_client(recognition="header_pattern", header="Authorization", pattern=r"Token [0-9a-f]{40}")
    async with serve_app(create_upstream()) as upstream, login_env(tmp_path, policy=policy, pms_url=upstream) as env:
        status, body = await send(env.url, "GET", "/api/v1/x", [("Authorization", PMS_TOKEN), ("Authorization", second)])
        assert status == 400, body
        status, _ = await send(env.url, "GET", "/api/v1/x", [("Authorization", PMS_TOKEN)])
        assert status == 200
