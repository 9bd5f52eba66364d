"""YAML loading that remembers where every key was written, and reads only plain data.

Validation errors must say `policies/default.yaml:14: sessions.idle_timeout: ...`, so the
file is composed into nodes first and every mapping key's line recorded by its path.

Policy files are operator input read by a running gateway (hot reload), so the reader
accepts only what a policy needs and refuses the rest with a `file:line: key: message`
error instead of an exception from deep inside PyYAML:

- the file is UTF-8 and at most `MAX_FILE_BYTES` long (parsing is pure Python: a 1 MiB
  flow list took 34 s; a site with more to say splits it over several files);
- no anchors or aliases: a 390-byte "billion laughs" file expands to gigabytes, and a
  policy written out in full is easier to review anyway;
- no tags but the core scalar and collection ones (`!!str`, `!!int`, ...): `!!timestamp`,
  `!!binary`, `!!set` and friends build values no field expects;
- nesting at most `MAX_DEPTH` levels (PyYAML's composer recurses: `[` x 2000 is a
  RecursionError);
- no duplicate keys (YAML keeps the last silently; two `deny:` in one rule is a mistake);
- dates stay text, `on`/`yes`/`no` stay text (YAML 1.2 booleans), `<<` and `=` are keys.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

KeyPath = tuple[str | int, ...]

MAX_FILE_BYTES = 128 * 1024  # 27x the shipped default; PyYAML is pure Python here, ~40 us a node
MAX_DEPTH = 32
_CORE_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "seq", "map")
)
_DROPPED_RESOLVERS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("bool", "timestamp", "merge", "value")
)


class PolicyYamlLoader(yaml.SafeLoader):
    """SafeLoader restricted to plain data (see the module docstring), YAML 1.2 booleans.

    YAML 1.1 reads `on`, `off`, `yes`, `no` as booleans, so `alerts: {on: [...]}` would
    silently become `{True: [...]}` and a country code `NO` would become False.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.key_path: list[str | int] = []  # where the composer is: named in errors
        self.depth = 0
        self.node_paths: dict[int, KeyPath] = {}  # for errors found while constructing values

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node:
        event = self.peek_event()
        named = isinstance(index, (int, yaml.Node))  # a list item or a mapping value
        if named:
            self.key_path.append(index if isinstance(index, int) else str(index.value))
        if isinstance(event, yaml.AliasEvent):
            raise _refused(event.start_mark, f"aliases (*{event.anchor}) are not allowed: write the value out")
        if event.anchor is not None:
            raise _refused(event.start_mark, f"anchors (&{event.anchor}) are not allowed: write the value out")
        tag = getattr(event, "tag", None)
        if tag not in (None, "!") and tag not in _CORE_TAGS:
            shown = tag.replace("tag:yaml.org,2002:", "!!")
            raise _refused(event.start_mark, f"the tag {shown} is not allowed: write a plain value")
        if self.depth >= MAX_DEPTH:
            raise _refused(event.start_mark, f"nested more than {MAX_DEPTH} levels deep")
        self.depth += 1
        node = super().compose_node(parent, index)
        self.depth -= 1  # only on success: after an error, key_path says where it was
        self.node_paths[id(node)] = tuple(self.key_path)
        if named:
            self.key_path.pop()
        return node

    def get_single_node(self) -> yaml.Node | None:
        try:
            return super().get_single_node()
        except yaml.composer.ComposerError as exc:
            if exc.problem != "but found another document":
                raise
            raise _refused(exc.problem_mark, "a policy file is one YAML document: remove the second `---`") from None

    def compose_mapping_node(self, anchor: str | None) -> yaml.MappingNode:
        node = super().compose_mapping_node(anchor)
        first_line: dict[str, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise _refused(key_node.start_mark, "a key must be a plain word, not a list or mapping")
            line = key_node.start_mark.line + 1
            if key_node.value in first_line:
                self.key_path.append(key_node.value)
                raise _refused(
                    key_node.start_mark,
                    f"duplicate key {key_node.value!r} (first written on line {first_line[key_node.value]})",
                )
            first_line[key_node.value] = line
        return node

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except yaml.YAMLError:
            raise
        except Exception as exc:  # int() of 5,000 digits; `!!int ` with no digits (IndexError)
            self.key_path = list(self.node_paths.get(id(node), ()))
            problem = "this number is too long" if node.tag.endswith(":int") else f"cannot read this value ({exc})"
            raise _refused(node.start_mark, problem) from None


def _refused(mark: yaml.Mark, message: str) -> yaml.MarkedYAMLError:
    return yaml.composer.ComposerError(None, None, message, mark)


PolicyYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _DROPPED_RESOLVERS]
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
    """A file that is not plain, valid YAML, with its location and the key being read."""

    def __init__(self, path: Path, line: int | None, message: str, key: str = "") -> None:
        self.path, self.line, self.message, self.key = path, line, message, key
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {key or '(top level)'}: {message}")


def read_text(path: Path) -> str:
    """The file as text: UTF-8 (a BOM is allowed), at most MAX_FILE_BYTES."""
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise YamlError(path, None, f"cannot read file: {exc.strerror or exc}") from exc
    if len(raw) > MAX_FILE_BYTES:
        raise YamlError(path, None, f"larger than {MAX_FILE_BYTES // 1024} KiB: split it into several files")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise YamlError(
            path, line, f"not UTF-8 (byte 0x{raw[exc.start]:02X} at column {column}): save the file as UTF-8"
        ) from None


def parse_yaml(path: Path, text: str) -> tuple[yaml.Node | None, Any]:
    """Compose and construct one document; any failure is a YamlError with its line."""
    loader: PolicyYamlLoader | None = None
    try:
        loader = PolicyYamlLoader(text)  # the reader refuses NUL and other controls right here
        node = loader.get_single_node()
        return node, (loader.construct_document(node) if node is not None else None)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = str(exc.problem or exc.context or "invalid YAML")
        raise YamlError(path, mark.line + 1 if mark else None, message, _where(loader)) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow, e.g. NUL
        line = text.count("\n", 0, exc.position) + 1
        raise YamlError(path, line, f"character {exc.character!r} is not allowed in YAML", _where(loader)) from None
    except yaml.YAMLError as exc:
        raise YamlError(path, None, str(exc), _where(loader)) from None
    finally:
        if loader is not None:
            loader.dispose()


def load_yaml(path: Path, text: str | None = None) -> YamlSource:
    node, data = parse_yaml(path, read_text(path) if text is None else text)
    source = YamlSource(path=path, data=data if data is not None else {})
    if node is not None:
        _record_lines(node, (), source.lines)
    return source


def _where(loader: PolicyYamlLoader | None) -> str:
    return ".".join(map(str, loader.key_path)) if loader is not None else ""


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
