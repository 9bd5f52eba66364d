"""Loading policy files into a validated `Policy`.

Several files may be given: they are merged in order, later keys overriding earlier ones
section by section, so a site file can change one timeout without copying the default
policy. A folder stands for its `*.yaml` files in name order.

Composition is explicit. A file may say `extends: default.yaml` (relative to itself): its
bases load first, then the file on top. Such a file is a policy of its own (strict mode is
`strict.yaml`, which extends `default.yaml`), so a folder never loads it by accident: a
folder holding default.yaml and strict.yaml gives the default policy, and strict mode is on
only where `policy_paths` names strict.yaml. `LoadedPolicy.files` says which files made up
the effective policy and `skipped` which a folder held back.

An empty file or folder is an error (a policy that says nothing is a mistake, not "all
defaults"); durations need a unit and network names must be defined, each reported at the
line that uses them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gateway.policy.durations import unitless_durations, unitless_message
from gateway.policy.errors import ConfigError, ConfigProblem, problem_at, problems_from_validation
from gateway.policy.schema import Policy
from gateway.policy.types import NETWORK_NAMES
from gateway.policy.yaml_source import YamlError, YamlSource, load_yaml


@dataclass
class LoadedPolicy:
    """A validated policy and where it came from."""

    policy: Policy
    files: list[Path]  # in merge order, bases before the files that extend them
    skipped: list[tuple[Path, list[str]]] = field(default_factory=list)  # folder files that extend others
    sources: list[YamlSource] = field(default_factory=list)


def load_policy(*paths: Path | str) -> Policy:
    """Validate and merge policy files; raises ConfigError naming file, line and key."""
    return load_policy_files(*paths).policy


def load_policy_files(*paths: Path | str) -> LoadedPolicy:
    """`load_policy`, also telling which files were merged and which a folder held back."""
    if not paths:
        return LoadedPolicy(Policy(), [])
    composer = _Composer()
    for path in map(Path, paths):
        if path.is_dir():
            composer.add_folder(path)
        else:
            composer.add_file(path)
    merged: dict[str, Any] = {}
    for source in composer.sources:
        _merge(merged, {k: v for k, v in source.data.items() if k != "extends"})
    problems = [
        problem_at([source], loc, unitless_message(value), "duration_unit")
        for source in composer.sources
        for loc, value in unitless_durations(Policy, source.data)
    ]
    networks = merged.get("networks")
    context = {NETWORK_NAMES: frozenset(networks) if isinstance(networks, dict) else frozenset()}
    try:
        policy = Policy.model_validate(merged, context=context)
    except ValidationError as exc:
        invalid = problems_from_validation(exc, composer.sources)
        keys = {problem.key for problem in invalid}  # a 400-digit number: "too long" says more than "no unit"
        problems = [problem for problem in problems if problem.key not in keys] + invalid
    if problems:
        raise ConfigError(problems)
    return LoadedPolicy(policy, [s.path for s in composer.sources], composer.skipped, composer.sources)


def policy_file_candidates(paths: list[Path]) -> list[Path]:
    """The files named or held by folders (without reading them): what a watcher stats."""
    files: list[Path] = []
    for path in paths:
        files.extend(sorted(path.glob("*.yaml")) if path.is_dir() else [path])
    return files


class _Composer:
    """Reads files once each, bases (`extends`) before the files that extend them."""

    def __init__(self) -> None:
        self.sources: list[YamlSource] = []
        self.skipped: list[tuple[Path, list[str]]] = []
        self._done: set[Path] = set()

    def add_folder(self, folder: Path) -> None:
        files = sorted(folder.glob("*.yaml"))
        if not files:
            raise ConfigError([ConfigProblem(folder, None, "", "no *.yaml policy file in this folder: "
                                              "name a file in policy_paths, e.g. policies/default.yaml")])
        own: list[YamlSource] = []
        for file in files:
            source = _read(file)
            if _extends(source):
                self.skipped.append((file, _extends(source)))
            else:
                own.append(source)
        if not own:
            variants = ", ".join(str(f) for f, _ in self.skipped)
            raise ConfigError([ConfigProblem(folder, None, "", f"every file here extends another ({variants}): "
                                              "name the one to use in policy_paths")])
        for source in own:
            self._add(source, chain=())

    def add_file(self, file: Path) -> None:
        self._add(_read(file), chain=())

    def _add(self, source: YamlSource, chain: tuple[Path, ...]) -> None:
        key = source.path.resolve()
        if key in self._done:
            return
        for index, base in enumerate(_extends(source)):
            base_path = source.path.parent / base
            line = source.line_of(("extends", index)) or source.line_of(("extends",))
            if base_path.resolve() in (*chain, key):
                raise ConfigError([ConfigProblem(source.path, line, "extends",
                                                 f"{base!r} extends this file again (a loop): remove one `extends`")])
            if not base_path.is_file():
                raise ConfigError([ConfigProblem(source.path, line, "extends",
                                                 f"{base!r} not found (looked for {base_path}; the path is relative "
                                                 "to this file's folder)")])
            self._add(_read(base_path), chain=(*chain, key))
        self._done.add(key)
        self.sources.append(source)


def _extends(source: YamlSource) -> list[str]:
    value = source.data.get("extends")
    if value is None:
        return []
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
        line = source.line_of(("extends",))
        raise ConfigError([ConfigProblem(source.path, line, "extends",
                                         "write a file name (extends: default.yaml) or a list of them")])
    return values


def _read(file: Path) -> YamlSource:
    if not file.exists():
        raise ConfigError([ConfigProblem(file, None, "", "no such file: check policy_paths (relative paths start "
                                         "from the folder the gateway runs in)")])
    try:
        source = load_yaml(file)
    except YamlError as exc:
        kind = "duplicate_key" if exc.message.startswith("duplicate key") else ""
        raise ConfigError([ConfigProblem(exc.path, exc.line, exc.key, exc.message, kind)]) from None
    if not source.lines:  # nothing but comments and blank lines
        raise ConfigError([ConfigProblem(file, None, "", "the file is empty: write the sections it should set "
                                         "(`pms-gateway policy reference` lists them), or leave it out")])
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
