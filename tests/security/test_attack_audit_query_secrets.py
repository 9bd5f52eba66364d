"""A password in a query string never lands in the audit trail, whatever its spelling.

Found by the attack on issue 8: with `audit.query_values: keep`, the audit kept every
query value whose name did not look secret, splitting on `&` only and reading names as
sent. The credential reader refuses `a=1;password=x`, `pa%00ssword=x` and a fullwidth
`ｐassword=x` (servers split on `;` and fold names), yet the refused request's record
kept the password in clear. The audit now splits and folds names as that reader does.
"""

from __future__ import annotations

import asyncio

import pytest
import yaml

from gateway.audit.query import AuditReader
from gateway.policy import load_policy
from tests.login_env import login_env
from tests.security.hostile import send

SECRET = "Sup3rSecretPw"
QUERIES = [f"a=1;password={SECRET}", f"pa%00ssword={SECRET}", f"%EF%BD%90assword={SECRET}", f"x=1;PassWord={SECRET}"]


@pytest.mark.parametrize("query", QUERIES)
async def test_a_refused_password_in_the_query_is_not_kept(tmp_path, query):
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({"audit": {"query_values": "keep"}}))
    async with login_env(tmp_path, policy=load_policy("policies/default.yaml", overlay)) as env:
        status, _ = await send(env.url, "GET", f"/login?{query}", [])
        assert status == 400
        reader = AuditReader(env.services.database, env.services.audit.keys)
        for _ in range(100):
            records = [r async for r in reader.records() if r.get("path") == "/login"]
            if records:
                break
            await asyncio.sleep(0.05)
        (record,) = records
        assert record["decision"] == "refused" and record["query"]
        assert SECRET not in str(record)
