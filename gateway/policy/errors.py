"""Turning pydantic's validation errors into lines an operator can act on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from gateway.policy.yaml_source import YamlSource


# Kinds of problem `pms-gateway policy migrate` rewrites: files valid before the loader
# grew stricter (duplicate keys, durations without a unit).
MIGRATABLE = frozenset({"duplicate_key", "duration_unit"})


@dataclass(frozen=True)
class ConfigProblem:
    path: Path | str
    line: int | None
    key: str
    message: str
    kind: str = ""  # e.g. "duplicate_key", "duration_unit", "unknown_key"; "" when no one asks

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else str(self.path)
        return f"{where}: {self.key or '(top level)'}: {self.message}"


class ConfigError(ValueError):
    """One or more problems in a configuration or policy file; str() lists them all."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))

    def migratable_files(self) -> list[str]:
        """Files refused only for what `pms-gateway policy migrate` rewrites."""
        files = dict.fromkeys(str(p.path) for p in self.problems if p.kind in MIGRATABLE)
        return [f for f in files if all(p.kind in MIGRATABLE for p in self.problems if str(p.path) == f)]


def migrate_hint(error: ConfigError) -> str | None:
    """The command that fixes `error`, when `policy migrate` can."""
    files = error.migratable_files()
    return " && ".join(f"pms-gateway policy migrate {f}" for f in files) if files else None


POLICY_KEYS_HINT = "`pms-gateway policy schema` lists every key"
CONFIG_KEYS_HINT = "`pms-gateway config example` prints every key with its meaning"


def problems_from_validation(
    error: ValidationError, sources: list[YamlSource], key_prefix: str = "", keys_hint: str = POLICY_KEYS_HINT
) -> list[ConfigProblem]:
    """One problem per error, attributed to the last file that wrote the offending key."""
    problems = []
    seen: set[tuple] = set()
    for item in error.errors():
        loc = tuple(part for part in item["loc"] if not _is_union_tag(part))
        problem = problem_at(sources, loc, _explain(item, keys_hint), item["type"], key_prefix)
        if (problem.key, problem.message) not in seen:  # a union reports each member's complaint
            seen.add((problem.key, problem.message))
            problems.append(problem)
    return problems


def problem_at(
    sources: list[YamlSource], loc: tuple, message: str, kind: str = "", key_prefix: str = ""
) -> ConfigProblem:
    """A problem (or a warning) about the key at `loc`, at the line of the file that last wrote it."""
    source = _last_writer(sources, loc)
    key = ".".join(str(part) for part in loc)
    line = source.line_of(loc) if source.line_of(loc[:1]) is not None else None
    return ConfigProblem(source.path, line, key_prefix + key, message, kind)


def _last_writer(sources: list[YamlSource], loc: tuple) -> YamlSource:
    for depth in range(len(loc), 0, -1):
        for source in reversed(sources):
            if tuple(loc[:depth]) in source.lines:
                return source
    return sources[-1]


def _is_union_tag(part: object) -> bool:
    # pydantic inserts the union member's name ("function-after[...]", "str") into loc.
    return isinstance(part, str) and ("[" in part or part in {"str", "int", "float", "list[str]"})


def _explain(item: dict, keys_hint: str = POLICY_KEYS_HINT) -> str:
    kind, message = item["type"], item["msg"]
    if kind == "extra_forbidden":
        return f"unknown key (check the spelling; {keys_hint})"
    if kind == "missing":
        return "required key is missing"
    if kind == "literal_error":
        return message.replace("Input should be", "must be")
    if message.startswith("Value error, "):
        return message.removeprefix("Value error, ")
    return message
