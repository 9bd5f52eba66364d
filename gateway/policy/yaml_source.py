"""YAML loading that remembers where every key was written.

Validation errors must say `policies/default.yaml:14: sessions.idle_timeout: ...`, so the
file is composed into nodes first and every mapping key's line recorded by its path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import re

import yaml

KeyPath = tuple[str | int, ...]


class PolicyYamlLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: only true/false.

    YAML 1.1 reads `on`, `off`, `yes`, `no` as booleans, so `alerts: {on: [...]}` would
    silently become `{True: [...]}` and a country code `NO` would become False.
    """


PolicyYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
PolicyYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


@dataclass
class YamlSource:
    """Parsed YAML data plus the line (1-based) of every key and list item."""

    path: Path
    data: Any
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def line_of(self, key_path: KeyPath) -> int | None:
        """The line of the deepest known prefix of `key_path`."""
        for end in range(len(key_path), -1, -1):
            line = self.lines.get(tuple(key_path[:end]))
            if line is not None:
                return line
        return None


class YamlError(ValueError):
    """A file that is not valid YAML, with its location."""

    def __init__(self, path: Path, line: int | None, message: str) -> None:
        self.path, self.line, self.message = path, line, message
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {message}")


def load_yaml(path: Path, text: str | None = None) -> YamlSource:
    if text is None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise YamlError(path, None, f"cannot read file: {exc.strerror}") from exc
    try:
        node = yaml.compose(text, Loader=PolicyYamlLoader)
        data = yaml.load(text, Loader=PolicyYamlLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise YamlError(path, mark.line + 1 if mark else None, str(exc.problem or exc)) from exc
    except yaml.YAMLError as exc:
        raise YamlError(path, None, str(exc)) from exc
    source = YamlSource(path=path, data=data if data is not None else {})
    if node is not None:
        _record_lines(node, (), source.lines)
    return source


def _record_lines(node: yaml.Node, prefix: KeyPath, lines: dict[KeyPath, int]) -> None:
    lines.setdefault(prefix, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key_path = (*prefix, str(key_node.value))
            lines[key_path] = key_node.start_mark.line + 1
            _record_lines(value_node, key_path, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _record_lines(item, (*prefix, index), lines)
