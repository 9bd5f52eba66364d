"""Every policy snippet of README's "Fitting your PMS" checklist is valid: each YAML block,
merged into policies/default.yaml as an operator would paste it, passes the loader (the
same validation as `pms-gateway policy check`, unknown keys refused)."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
import yaml

from gateway.policy import ConfigError, load_policy

ROOT = Path(__file__).resolve().parent.parent
SECTION = "### Fitting your PMS"
BLOCK = re.compile(r"^(?P<indent>[ \t]*)```yaml\n(?P<body>.*?)^(?P=indent)```$", re.MULTILINE | re.DOTALL)


def checklist_snippets() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    start = readme.index(SECTION)
    end = re.compile(r"^#{2,3} ", re.MULTILINE).search(readme, start + len(SECTION)).start()
    return [textwrap.dedent(m.group("body")) for m in BLOCK.finditer(readme[start:end])]


SNIPPETS = checklist_snippets()


def test_the_checklist_has_its_snippets():
    assert len(SNIPPETS) >= 9  # login, cookies, logout, password forms, guest areas, API, polling, base URL, 2nd step
    assert all(isinstance(yaml.safe_load(s), dict) for s in SNIPPETS)


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[next(iter(yaml.safe_load(s))) for s in SNIPPETS])
def test_each_snippet_is_valid_merged_into_the_default_policy(tmp_path, snippet):
    fragment = tmp_path / "zz-fitting.yaml"
    fragment.write_text(snippet)
    policy = load_policy(ROOT / "policies" / "default.yaml", fragment)
    data = yaml.safe_load(snippet)
    if "login" in data and "path" in data["login"]:
        assert policy.login.path == data["login"]["path"]  # the fragment took effect, not ignored


def test_a_misspelled_key_in_a_snippet_would_fail(tmp_path):
    fragment = tmp_path / "zz-fitting.yaml"
    fragment.write_text("login:\n  logout_path: [/account/logoff]\n")
    with pytest.raises(ConfigError, match="logout_path"):
        load_policy(ROOT / "policies" / "default.yaml", fragment)
