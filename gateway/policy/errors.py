"""Turning pydantic's validation errors into lines an operator can act on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from gateway.policy.yaml_source import YamlSource


@dataclass(frozen=True)
class ConfigProblem:
    path: Path | str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else str(self.path)
        return f"{where}: {self.key or '(top level)'}: {self.message}"


class ConfigError(ValueError):
    """One or more problems in a configuration or policy file; str() lists them all."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def problems_from_validation(
    error: ValidationError, sources: list[YamlSource], key_prefix: str = ""
) -> list[ConfigProblem]:
    """One problem per error, attributed to the last file that wrote the offending key."""
    problems = []
    for item in error.errors():
        loc = tuple(part for part in item["loc"] if not _is_union_tag(part))
        source = _last_writer(sources, loc)
        key = ".".join(str(part) for part in loc)
        line = source.line_of(loc) if source.line_of(loc[:1]) is not None else None
        problems.append(ConfigProblem(source.path, line, key_prefix + key, _explain(item)))
    return problems


def _last_writer(sources: list[YamlSource], loc: tuple) -> YamlSource:
    for depth in range(len(loc), 0, -1):
        for source in reversed(sources):
            if tuple(loc[:depth]) in source.lines:
                return source
    return sources[-1]


def _is_union_tag(part: object) -> bool:
    # pydantic inserts the union member's name ("function-after[...]", "str") into loc.
    return isinstance(part, str) and ("[" in part or part in {"str", "int", "float", "list[str]"})


def _explain(item: dict) -> str:
    kind, message = item["type"], item["msg"]
    if kind == "extra_forbidden":
        return "unknown key (check the spelling; `pms-gateway policy schema` lists every key)"
    if kind == "missing":
        return "required key is missing"
    if kind == "literal_error":
        return message.replace("Input should be", "must be")
    if message.startswith("Value error, "):
        return message.removeprefix("Value error, ")
    return message
