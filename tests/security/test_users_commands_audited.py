"""`pms-gateway users` changes are in the audit trail under the OS user (issue 8 leftovers).

The console recorded invite, deactivate, activate and reset-2fa under its operator; the
same changes from the command line left no trace, so a leaver could be re-activated (or a
stolen phone's factor wiped) without a record. Each now appends an admin record, as the
`api-clients` and `operators` commands do, through the same `record_admin_action`.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

from typer.testing import CliRunner

from gateway.audit.query import AuditReader, QueryFilter
from gateway.audit.verify import verify_trail
from gateway.cli import app
from gateway.cli_support import cli_actor
from tests.test_audit_support import audit_stack


def cli(tmp_path: Path, *args: str) -> tuple[int, str]:
    policy = tmp_path / "policy.yaml"
    policy.write_text("groups:\n  reception:\n    members: [alice]\ndefault_group: null\n")
    env = {"PMS_GATEWAY_DATA_DIR": str(tmp_path), "PMS_GATEWAY_POLICY_PATHS": f"[{policy}]",
           "PMS_GATEWAY_INSTANCE_ID": "gw-test"}
    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, result.output


async def test_every_users_change_is_audited_under_the_os_user_without_the_invite_code(tmp_path: Path) -> None:
    outputs = []
    for step in [("invite", "Alice"), ("deactivate", "alice"), ("activate", "ALICE"), ("reset-2fa", "alice"),
                 ("list",), ("deactivate", "ghost")]:
        code, output = await asyncio.to_thread(cli, tmp_path, "users", *step)
        outputs.append(output)
        assert code == (1 if step[-1] == "ghost" else 0), output
    code = re.search(r"Invite for alice \(group reception\): (\S+)", outputs[0])
    assert code, outputs[0]

    async with audit_stack(tmp_path) as stack:
        reader = AuditReader(stack.database, stack.services.keys)
        records = [r async for r in reader.records(QueryFilter(channel="admin"))]
        assert [r["decision"] for r in records] == [  # list reads only; a refused command changed nothing
            "user_invited", "user_deactivated", "user_activated", "user_2fa_reset",
        ]
        for record in records:
            assert record["user"] == cli_actor() and record["identifiers"] == {"user": "alice"}
            assert record["reason"] == "command line"
        by_action = {r["decision"]: r["extra"] for r in records}
        assert by_action["user_2fa_reset"] == {"removed": 0, "ended": 0}
        assert "expires_at" in by_action["user_invited"]
        assert code.group(1) not in json.dumps(records, default=str)  # the invite code never
        assert (await verify_trail(stack.database, stack.services.keys)).ok
