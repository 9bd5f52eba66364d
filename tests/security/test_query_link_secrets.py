"""A reset token in the query string is kept only as a digest (issue 8 leftovers).

`audit.path_secrets` digested `/password/reset/<token>`, but a PMS that mails
`/password/reset?token=<token>` had the token recorded by `query_values: keep` as a bare
`[redacted]` at best, and in clear under a name that does not look secret. `audit.query_secrets`
names such parameters: their values are recorded, and shown in logs, as the same digest as
the path form, so one link can be followed across records and never opened from them.
"""

from __future__ import annotations

import asyncio
import re

import yaml

from gateway.audit.path_secrets import path_for_logs, secret_digest
from gateway.policy import load_policy
from tests.login_env import Browser
from tests.test_login_flow import new_browser
from tests.test_password_forms import audit_rows, mail_world, reset_link


def _policy(tmp_path, **audit):
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({
        "audit": {"query_values": "keep", **audit},
        "public_areas": {"old reset links": {"paths": ["^/password/reset$"]}},  # the query-string link form
    }))
    return load_policy("policies/default.yaml", overlay)


async def _query_of(env, path: str) -> list[str]:
    for _ in range(40):
        rows = [r for r in await audit_rows(env) if r.path == path and r.query]
        if rows:
            return [r.query for r in rows]
        await asyncio.sleep(0.1)
    raise AssertionError(f"no audit record for {path}")


async def test_a_reset_token_in_the_query_is_recorded_as_the_digest_of_the_path_form(tmp_path):
    policy = _policy(tmp_path, query_secrets=["token", "ref"])
    async with mail_world(tmp_path, policy=policy) as env:
        browser: Browser = await new_browser(env)
        link = await reset_link(env, browser, "alice")
        token = link.rsplit("/", 1)[1]
        status, headers, _ = await browser.request("GET", f"/password/reset?token={token}&lang=en")
        assert (status, headers["Location"]) == (302, link)  # the demo sends the old link form on
        status, _, page = await browser.request("GET", headers["Location"])
        assert status == 200 and "Choose a new password" in page
        # other spellings a lenient server reads as `token` are digested too; a name not listed but
        # secret-looking stays redacted, an ordinary one stays readable
        await browser.request("GET", f"/password/reset?TOKEN={token};ref={token}&sig=abc&lang=de")

        queries = await _query_of(env, "/password/reset")
        digest = secret_digest(token)
        assert f"token={digest}&lang=en" in queries, queries
        assert f"TOKEN={digest}&ref={digest}&sig=[redacted]&lang=de" in queries, queries
        rows = await audit_rows(env)
        assert token not in str([(r.path, r.query) for r in rows])
        assert f"/password/reset/{digest}" in {r.path for r in rows}  # one link, one digest, both forms

        # log lines digest it the same way
        audit = policy.audit
        shown = path_for_logs(f"/password/reset/{token}?Token={token}", audit.path_secrets, audit.query_secrets)
        assert shown == f"/password/reset/{digest}?Token={digest}"


async def test_without_query_secrets_the_token_is_only_redacted(tmp_path):
    async with mail_world(tmp_path, policy=_policy(tmp_path, query_secrets=[])) as env:
        browser = await new_browser(env)
        link = await reset_link(env, browser, "alice")
        token = link.rsplit("/", 1)[1]
        await browser.request("GET", f"/password/reset?token={token}")
        (query,) = await _query_of(env, "/password/reset")
        assert query == "token=[redacted]" and not re.search("~[0-9a-f]{16}", query)
