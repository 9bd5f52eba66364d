"""Loading policy files into a validated `Policy`.

Several files may be given (policies/*.yaml): they are merged in order, later keys
overriding earlier ones section by section, so a site file can change one timeout without
copying the default policy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gateway.policy.errors import ConfigError, ConfigProblem, problems_from_validation
from gateway.policy.schema import Policy
from gateway.policy.yaml_source import YamlError, YamlSource, load_yaml


def load_policy(*paths: Path | str) -> Policy:
    """Validate and merge policy files; raises ConfigError naming file, line and key."""
    if not paths:
        return Policy()
    merged: dict[str, Any] = {}
    sources: list[YamlSource] = []
    for path in map(Path, paths):
        for file in sorted(path.glob("*.yaml")) if path.is_dir() else [path]:
            source = _read(file)
            sources.append(source)
            _merge(merged, source.data)
    try:
        return Policy.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(problems_from_validation(exc, sources)) from None


def _read(file: Path) -> YamlSource:
    try:
        source = load_yaml(file)
    except YamlError as exc:
        raise ConfigError([ConfigProblem(exc.path, exc.line, exc.key, exc.message)]) from None
    if not isinstance(source.data, dict):
        raise ConfigError([ConfigProblem(file, 1, "", "a policy file is a mapping of sections (key: value)")])
    return source


def _merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def policy_json_schema() -> dict[str, Any]:
    schema = Policy.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "PMS gateway policy"
    return schema
