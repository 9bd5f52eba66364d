"""The `pms-gateway` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from gateway.cli_support import ConfigOption, load_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Security gateway for hotel and booking systems.")
policy_app = typer.Typer(no_args_is_help=True, help="Check policy files and print their schema.")
app.add_typer(policy_app, name="policy")
config_app = typer.Typer(no_args_is_help=True, help="Check deployment settings and print an example.")
app.add_typer(config_app, name="config")
from gateway.auth.commands import keys_app, users_app  # noqa: E402  (sub-apps, lazy inside)
from gateway.sessions.commands import sessions_app  # noqa: E402

app.add_typer(users_app, name="users")
app.add_typer(keys_app, name="keys")
app.add_typer(sessions_app, name="sessions")
from gateway.audit.cli import audit_app, ips_app, logins_command  # noqa: E402  (lazy inside)

app.add_typer(audit_app, name="audit")
app.add_typer(ips_app, name="ips")
from gateway.auth.support import support_app  # noqa: E402

app.add_typer(support_app, name="support")
from gateway.redact.mail_commands import mail_app  # noqa: E402

app.add_typer(mail_app, name="mail")
from gateway.discover.commands import login_app  # noqa: E402  (lazy inside)

app.add_typer(login_app, name="login")
from gateway.access.api_commands import api_clients_app  # noqa: E402  (lazy inside)

app.add_typer(api_clients_app, name="api-clients")
from gateway.risk.commands import risk_app  # noqa: E402  (lazy inside)

app.add_typer(risk_app, name="risk")
from gateway.admin.operator_commands import operators_app  # noqa: E402  (lazy inside)

app.add_typer(operators_app, name="operators")
app.command("logins")(logins_command)

@policy_app.command("check")
def policy_check(paths: Annotated[list[Path], typer.Argument(help="Policy files or folders.")]) -> None:
    """Validate policy files; exit 1 naming file, line and key of every problem.

    Prints which files made up the effective policy and warns about settings that are
    legal but probably wrong."""
    from gateway.policy.commands import check_policy

    raise typer.Exit(check_policy(paths))


@policy_app.command("migrate")
def policy_migrate(path: Annotated[Path, typer.Argument(help="A policy file refused since the loader grew stricter.")]) -> None:
    """Rewrite a policy file that was valid before (duplicate keys, durations without a unit), keeping its
    comments, and print what changed."""
    from gateway.policy.commands import migrate_policy

    raise typer.Exit(migrate_policy(path))


@policy_app.command("explain")
def policy_explain(
    user: Annotated[str, typer.Option("--user", help="Username as typed at the login (or api:NAME for an API client).")],
    ip: Annotated[str, typer.Option("--ip", help="Client address.")],
    method: Annotated[str, typer.Option("--method", help="HTTP method.")],
    path: Annotated[str, typer.Option("--path", help="Request path, without the query.")],
    at: Annotated[str | None, typer.Option("--at", help="When (ISO 8601, UTC unless an offset is given); default now.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object, for scripts.")] = False,
    config: ConfigOption = None,
    policy: Annotated[list[Path] | None, typer.Option("--policy", help="Policy files (default: config's policy_paths).")] = None,
) -> None:
    """Say what the gateway would do with this request and every rule that took part, in order: group,
    network, captcha (with the address's network owner), access rule, sessions, path kinds, rate limits."""
    from gateway.policy.explain import explain_command

    raise typer.Exit(explain_command(user, ip, method, path, at, as_json, config, policy))


@policy_app.command("schema")
def policy_schema() -> None:
    """Print the policy JSON Schema (for editor autocompletion)."""
    from gateway.policy import policy_json_schema

    typer.echo(json.dumps(policy_json_schema(), indent=2))


@policy_app.command("reference")
def policy_reference_command(
    readme: Annotated[Path | None, typer.Option(help="Update this file's reference sections in place.")] = None,
) -> None:
    """Print every policy and config option with its default and meaning (Markdown)."""
    from gateway.policy.reference import config_reference, policy_reference, replace_section

    if readme is None:
        typer.echo(policy_reference(), nl=False)
        return
    text = replace_section(readme.read_text(encoding="utf-8"), "policy-reference", policy_reference())
    text = replace_section(text, "config-reference", config_reference())
    readme.write_text(text, encoding="utf-8")


@config_app.command("example")
def config_example_command() -> None:
    """Print a config.yaml with every deployment option, its default and meaning."""
    from gateway.policy.reference import config_example

    typer.echo(config_example(), nl=False)


@config_app.command("check")
def config_check(
    config: ConfigOption = None,
    connect: Annotated[
        bool | None,
        typer.Option("--connect/--no-connect", help="Also reach the PMS, Redis, the database and mail servers "
                     "(default: on when the output is a terminal)."),
    ] = None,
) -> None:
    """Check what `run` needs: config.yaml plus PMS_GATEWAY_* overrides, the policy, data dir and key,
    GeoIP files and (with --connect) every server; one OK/FAIL line each, exit 1 on any FAIL."""
    from gateway.preflight import check_config

    raise typer.Exit(check_config(load_settings(config), sys.stdout.isatty() if connect is None else connect))


DebugOption = Annotated[bool, typer.Option("--debug", help="Show the traceback of a start-up error.")]


@app.command()
def run(config: ConfigOption = None, debug: DebugOption = False) -> None:
    """Run every listener the configuration enables."""
    import asyncio

    from gateway.preflight import before_start, listener_keys, operator_errors
    from gateway.serve import serve

    settings = load_settings(config, status=2)
    with operator_errors(debug, listener_keys(settings)):
        asyncio.run(before_start(settings))
        serve(settings)


@app.command()
def demo(
    port: Annotated[int, typer.Option(help="Port of the gateway.")] = 8080,
    pms_port: Annotated[int, typer.Option(help="Port of the demo PMS (loopback only).")] = 8081,
    data_dir: Annotated[Path, typer.Option(help="Where the demo keeps its database, keys and config.yaml.")] = Path("var/demo"),
    admin_port: Annotated[int, typer.Option(help="Port of the admin listener (console, metrics, health; loopback).")] = 9090,
    debug: DebugOption = False,
) -> None:
    """Start the demo PMS and the gateway in front of it, on the default policy, with the admin listener as `run` has it.

    The demo's settings are written to DATA_DIR/config.yaml: pass it to any command with -c."""
    from gateway.preflight import check_data_dir, operator_errors, refuse_unless
    from gateway.serve import serve_demo

    with operator_errors(debug, {port: "--port", pms_port: "--pms-port", admin_port: "--admin-port"}):
        refuse_unless(check_data_dir(data_dir, "--data-dir"))
        serve_demo(port=port, pms_port=pms_port, data_dir=data_dir, admin_port=admin_port)


egress_app = typer.Typer(no_args_is_help=True, help="The egress proxy that redacts the PMS's SMS/e-mail API calls.")
app.add_typer(egress_app, name="egress")


@egress_app.command("run")
def egress_run(config: ConfigOption = None) -> None:
    """Run the egress proxy alone (e.g. on another host), with config.yaml's `egress:` section."""
    from gateway.redact.egress import main as egress_main

    args = ["--config", str(config)] if config else []
    raise typer.Exit(egress_main(args))


@egress_app.command("ca")
def egress_ca(config: ConfigOption = None) -> None:
    """Print the egress CA certificate the PMS host must trust (regular proxy mode)."""
    from gateway.redact.egress import export_ca

    settings = load_settings(config)
    path = export_ca(settings.egress.confdir)
    typer.echo(f"# {path}", err=True)
    typer.echo(path.read_text(), nl=False)


@app.command("redact")
def redact(
    format: Annotated[str, typer.Option("--format", help="text | json | form | email")] = "text",
    policy: Annotated[Path | None, typer.Option("--policy", help="Policy file (default: the built-in default).")] = None,
    explain: Annotated[bool, typer.Option("--explain", help="List findings (detector, span, action) on stderr.")] = False,
    channel: Annotated[str | None, typer.Option("--channel", help="Apply a policy channel or provider preset (sendgrid, twilio, ...) as the egress proxy does.")] = None,
    content_type: Annotated[str | None, typer.Option("--content-type", help="Content-Type of the body for --channel (default: from the channel's format).")] = None,
) -> None:
    """Redact one message read on stdin and write it to stdout, as the relay and egress proxy would."""
    from gateway.redact.command import redact_command

    raise typer.Exit(redact_command(format, policy, explain, sys.stdin.buffer, sys.stdout.buffer, sys.stderr,
                                    channel, content_type))


from gateway.cli_help import reflow_help  # noqa: E402

reflow_help(app)  # every command is registered by now


def main() -> None:  # pragma: no cover - console script entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
