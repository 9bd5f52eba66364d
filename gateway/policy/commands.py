"""What `pms-gateway policy check` and `policy migrate` print.

`check` says which files made up the effective policy (so nobody runs strict mode, or
misses it, by accident), checks each file a folder held back on its own, and warns about
legal but probably wrong settings. Errors go to stderr, one `file:line: key: message` a
line; the rest to stdout. A file refused only for what `migrate` rewrites gets the command.
"""

from __future__ import annotations

from pathlib import Path

import typer

from gateway.policy.errors import ConfigError, migrate_hint


def check_policy(paths: list[Path]) -> int:
    """Exit status: 0 loadable (warnings allowed), 1 not."""
    from gateway.policy.advice import policy_warnings
    from gateway.policy.loader import load_policy_files

    shown = ", ".join(map(str, paths))
    try:
        loaded = load_policy_files(*paths)
    except ConfigError as exc:
        return _refused(exc)
    except Exception as exc:  # a loader bug: still one line for the operator, never a traceback
        typer.echo(f"{shown}: (top level): cannot be loaded ({type(exc).__name__}: {exc})", err=True)
        return 1
    typer.echo(f"ok: {shown} ({len(loaded.policy.groups)} groups)")
    typer.echo(f"  effective policy from: {', '.join(map(str, loaded.files))}")
    status = 0
    for file, bases in loaded.skipped:
        try:
            load_policy_files(file)
        except ConfigError as exc:
            status = _refused(exc)
            continue
        typer.echo(f"  not loaded: {file} (it extends {', '.join(bases)}: a policy of its own, "
                   f"used only where policy_paths names it; checked: ok)")
    for warning in policy_warnings(loaded):
        typer.echo(f"warning: {warning}")
    return status


def _refused(error: ConfigError) -> int:
    typer.echo(str(error), err=True)
    if fix := migrate_hint(error):
        typer.echo(f"fix: this file was valid before the loader grew stricter; run: {fix}")
    return 1


def migrate_policy(path: Path) -> int:
    from gateway.policy.migrate import migrate_file
    from gateway.policy.yaml_source import YamlError

    try:
        changes = migrate_file(path)
    except YamlError as exc:
        typer.echo(str(exc), err=True)
        return 1
    except Exception as exc:  # e.g. YAML migrate cannot read: one line, never a traceback
        typer.echo(f"{path}: (top level): cannot be migrated ({type(exc).__name__}: {exc})", err=True)
        return 1
    if not changes:
        typer.echo(f"{path}: nothing to migrate")
        return 0
    typer.echo(f"{path}: rewrote {len(changes)} place(s), comments kept:")
    for change in changes:
        typer.echo(f"  {change}")
    typer.echo(f"check it: pms-gateway policy check {path}")
    return 0
