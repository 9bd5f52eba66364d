"""Upkeep of API client tokens: every `pms-gateway api-clients` change is in the audit trail
under the OS user (never a token or the PMS credential), and the retention purge forgets
token rows that ended before its cutoff."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from typer.testing import CliRunner

from gateway.access.api_tokens import ApiTokens
from gateway.audit.query import AuditReader, QueryFilter
from gateway.audit.retention import purge
from gateway.audit.verify import verify_trail
from gateway.auth.keys import KeyRing
from gateway.cli import app
from gateway.cli_support import cli_actor
from gateway.db.tables import api_tokens
from gateway.policy.schema import AuditPolicy, Policy
from tests.test_audit_support import audit_stack

CLIENT = "channel-manager"
PMS_CREDENTIAL = "Token 0123456789abcdef0123456789abcdef01234567"
DAY = 86400


def cli(tmp_path: Path, *args: str) -> tuple[int, str]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"api_clients:\n  {CLIENT}:\n    paths: ['^/api/v1/']\n    networks: [192.0.2.10/32]\n")
    env = {"PMS_GATEWAY_DATA_DIR": str(tmp_path), "PMS_GATEWAY_POLICY_PATHS": f"[{policy}]",
           "PMS_GATEWAY_INSTANCE_ID": "gw-test", "PMS_CREDENTIAL": PMS_CREDENTIAL}
    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, result.output


def _tokens_in(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("pgw_")]


async def test_every_api_clients_change_is_audited_without_its_secrets(tmp_path: Path) -> None:
    steps = [
        ("add", CLIENT),
        ("rotate", CLIENT, "--overlap", "1d"),
        ("set-upstream-credential", CLIENT, "--value-env", "PMS_CREDENTIAL"),
        ("set-upstream-credential", CLIENT, "--clear"),
        ("revoke", CLIENT),
        ("list",),  # reads only: not recorded
    ]
    outputs = []
    for step in steps:
        code, output = await asyncio.to_thread(cli, tmp_path, "api-clients", *step)
        assert code == 0, output
        outputs.append(output)
    tokens = _tokens_in(outputs[0]) + _tokens_in(outputs[1])
    assert len(tokens) == 2

    async with audit_stack(tmp_path) as stack:
        reader = AuditReader(stack.database, stack.services.keys)
        records = [r async for r in reader.records(QueryFilter(channel="admin"))]
        assert sorted(r["decision"] for r in records) == sorted([
            "api_token_issued", "api_token_rotated", "api_upstream_credential_set",
            "api_upstream_credential_cleared", "api_tokens_revoked",
        ])
        for record in records:
            assert record["user"] == cli_actor() and record["identifiers"] == {"api_client": CLIENT}
        by_action = {r["decision"]: r["extra"] for r in records}
        assert by_action["api_token_issued"]["token_hint"] == tokens[0][:10]
        assert by_action["api_token_rotated"]["older_tokens_shortened"] == 1
        assert by_action["api_upstream_credential_set"] == {"header": "Authorization"}
        assert by_action["api_tokens_revoked"] == {"revoked": 2}
        stored = json.dumps(records, default=str)
        for secret in (*tokens, PMS_CREDENTIAL, "0123456789abcdef"):
            assert secret not in stored
        assert (await verify_trail(stack.database, stack.services.keys)).ok


async def test_the_retention_purge_forgets_tokens_that_ended_before_its_cutoff(tmp_path: Path) -> None:
    policy = Policy(audit=AuditPolicy(retention=30 * DAY))
    async with audit_stack(tmp_path, policy) as stack:
        tokens = ApiTokens(stack.database, KeyRing.load(tmp_path / "gateway.key", None))
        now = datetime.now(UTC)
        await tokens.issue("old-expired", timedelta(days=1), now - timedelta(days=40))
        await tokens.issue("recently-expired", timedelta(days=1), now - timedelta(days=10))
        await tokens.issue("live", timedelta(days=365), now)
        await tokens.issue("revoked-long-ago", timedelta(days=365), now - timedelta(days=60))
        await tokens.revoke("revoked-long-ago", now - timedelta(days=31))
        await tokens.issue("revoked-lately", timedelta(days=365), now - timedelta(days=60))
        await tokens.revoke("revoked-lately", now - timedelta(days=2))

        result = await purge(stack.database, stack.services.keys, policy)
        assert result.api_tokens == 2 and result.entry().extra["api_tokens"] == 2
        async with stack.database.connect() as conn:
            left = sorted((await conn.execute(select(api_tokens.c.client))).scalars())
        assert left == ["live", "recently-expired", "revoked-lately"]  # `list` still shows these
        assert (await purge(stack.database, stack.services.keys, policy)).api_tokens == 0
