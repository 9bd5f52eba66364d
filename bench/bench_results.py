"""Where the proxy benchmark writes: its own sections of bench/RESULTS.md and the summary
lines of README.md, each between its markers, leaving everything else as it is."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
README = ROOT / "README.md"
START_MARK = "<!-- proxy-bench:start -->"
END_MARK = "<!-- proxy-bench:end -->"
SUMMARY_START = "<!-- proxy-bench-summary:start -->"  # README's benchmark summary, written with --write
SUMMARY_END = "<!-- proxy-bench-summary:end -->"


def replace_between(text: str, start: str, end: str, block: str) -> str | None:
    """`text` with what lies between the markers `start` and `end` replaced by `block`
    (markers kept); None when the markers are not both there, in that order."""
    first, last = text.find(start), text.find(end)
    if first == -1 or last < first:
        return None
    return text[:first] + start + "\n" + block + end + text[last + len(end):]


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_results(section: str, results: Path = RESULTS, start: str = START_MARK, end: str = END_MARK) -> None:
    """Replace one benchmark's section of RESULTS.md (appended when new), leaving every
    other section as it is."""
    text = results.read_text() if results.exists() else "# Benchmark results\n\nWritten by the scripts in bench/; see bench/README.md.\n"
    replaced = replace_between(text, start, end, section)
    if replaced is None:
        replaced = text.rstrip("\n") + f"\n\n{start}\n{section}{end}\n"
    write_atomic(results, replaced)


def write_readme_summary(lines: list[str], readme: Path = README) -> bool:
    """README's benchmark summary, between its markers; False when they are missing."""
    replaced = replace_between(readme.read_text(), SUMMARY_START, SUMMARY_END, "\n".join(lines) + "\n")
    if replaced is None:
        return False
    write_atomic(readme, replaced)
    return True
