"""`pms-gateway policy migrate FILE`: rewrite a policy that was valid before the loader grew
stricter, so it means what it meant and loads again.

What it rewrites:

- duplicate keys: YAML used to keep the last one silently, so the earlier ones are
  removed (and the keys they held that the later one lacks are named, since the operator
  may have meant them: a second `sessions:` once wiped `idle_ignore_paths`);
- durations without a unit: a bare number meant seconds, so `25` becomes `25s`.

The file is edited as text at the spans PyYAML's nodes give, so comments, order, quoting
and layout stay exactly as the operator wrote them (a round trip through a YAML library
would re-indent and drop what it cannot represent).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from gateway.policy.durations import unitless_durations
from gateway.policy.schema import Policy
from gateway.policy.yaml_source import load_yaml, read_text


@dataclass(frozen=True)
class Change:
    line: int
    description: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.description}"


def migrate_file(path: Path) -> list[Change]:
    """Rewrite `path` in place; the changes made (none: the file is left untouched)."""
    text = read_text(path)
    new_text, changes = migrate_text(path, text)
    if changes:
        path.write_text(new_text, encoding="utf-8")
    return changes


def migrate_text(path: Path, text: str) -> tuple[str, list[Change]]:
    changes: list[Change] = []
    while (found := _first_duplicate(text)) is not None:  # one at a time: spans move after each edit
        text, change = _drop_earlier(text, *found)
        changes.append(change)
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    source = load_yaml(path, text)
    edits = []
    for loc, value in unitless_durations(Policy, source.data):
        node = _node_at(root, loc)
        if isinstance(node, yaml.ScalarNode):
            number = str(value).strip()
            edits.append((node.start_mark.index, node.end_mark.index, f"{number}s"))
            key = ".".join(map(str, loc))
            changes.append(Change(node.start_mark.line + 1, f"{key}: {number} -> {number}s (a bare number meant seconds)"))
    for start, end, replacement in sorted(edits, reverse=True):
        text = text[:start] + replacement + text[end:]
    return text, sorted(changes, key=lambda c: c.line)


def _first_duplicate(text: str) -> tuple[yaml.MappingNode, int, int] | None:
    """(mapping, index of an earlier entry, index of the later entry with the same key)."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    stack = [root] if root is not None else []
    while stack:
        node = stack.pop(0)
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for index, (key, _) in enumerate(node.value):
                if key.value in seen:
                    return node, seen[key.value], index
                seen[key.value] = index
            stack.extend(value for _, value in node.value)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
    return None


def _drop_earlier(text: str, mapping: yaml.MappingNode, earlier: int, later: int) -> tuple[str, Change]:
    key_node, value_node = mapping.value[earlier]
    next_key = mapping.value[earlier + 1][0]
    if mapping.flow_style:  # {a: 1, a: 2}: cut "a: 1, "
        start, end = key_node.start_mark.index, next_key.start_mark.index
    else:  # whole lines, keeping comment lines that lead into the next key
        lines = text.splitlines(keepends=True)
        first, stop = key_node.start_mark.line, next_key.start_mark.line
        while stop - 1 > first and (not lines[stop - 1].strip() or lines[stop - 1].lstrip().startswith("#")):
            stop -= 1
        start = sum(len(line) for line in lines[:first])
        end = sum(len(line) for line in lines[:stop])
    later_value = mapping.value[later][1]
    lost = _keys(value_node) - _keys(later_value)
    note = f"; it also set {', '.join(sorted(lost))}, which the later one lacks: add them there if still meant" if lost else ""
    change = Change(
        key_node.start_mark.line + 1,
        f"removed the first {key_node.value!r} (the one on line {mapping.value[later][0].start_mark.line + 1} "
        f"replaced it){note}",
    )
    return text[:start] + text[end:], change


def _keys(node: yaml.Node) -> set[str]:
    return {str(key.value) for key, _ in node.value} if isinstance(node, yaml.MappingNode) else set()


def _node_at(root: yaml.Node | None, loc: tuple) -> yaml.Node | None:
    node = root
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            node = next((value for key, value in reversed(node.value) if key.value == str(part)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            return None
    return node
