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
MEMORY_START = "<!-- proxy-bench-memory:start -->"  # README's memory lines, from the soak and stream sections
MEMORY_END = "<!-- proxy-bench-memory:end -->"


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


def write_readme_block(lines: list[str], start: str, end: str, readme: Path = README) -> bool:
    """`lines` into README between the markers `start` and `end`; False when they are missing."""
    replaced = replace_between(readme.read_text(), start, end, "\n".join(lines) + "\n")
    if replaced is None:
        return False
    write_atomic(readme, replaced)
    return True


def write_readme_summary(lines: list[str], readme: Path = README) -> bool:
    """README's benchmark summary, between its markers."""
    return write_readme_block(lines, SUMMARY_START, SUMMARY_END, readme)


def _section(text: str, start: str, end: str) -> str:
    first, last = text.find(start), text.find(end)
    return text[first + len(start):last] if -1 < first < last else ""


def memory_summary(results_text: str, soak_marks: tuple[str, str], stream_marks: tuple[str, str]) -> list[str]:
    """README's memory lines, read back from the soak and stream sections of RESULTS.md,
    so that whichever mode ran last states both."""
    lines = []
    soak = _section(results_text, *soak_marks)
    verdict = next((line[2:] for line in soak.splitlines() if line.startswith("- RSS within")), None)
    date = next((line[len("- Date: "):] for line in soak.splitlines() if line.startswith("- Date: ")), "")
    if verdict:
        lines.append(f"- memory, soak (`make bench-soak`, {date}): {verdict}")
    stream = _section(results_text, *stream_marks)
    date = next((line[len("- Date: "):] for line in stream.splitlines() if line.startswith("- Date: ")), "")
    for row in stream.splitlines():
        cells = [c.strip() for c in row.strip("|").split("|")]
        if len(cells) == 6 and cells[0] in ("upload", "download"):
            lines.append(f"- memory, 1 GiB {cells[0]} (`make bench-stream`, {date}): {cells[1]}, peak RSS of all "
                         f"the gateway's processes {cells[4]}: {cells[5]}")
    return lines or ["- memory: `make bench-soak` and `make bench-stream` have not been run with --write yet"]


def write_readme_memory(lines: list[str], readme: Path = README) -> bool:
    """README's memory lines, between their markers."""
    return write_readme_block(lines, MEMORY_START, MEMORY_END, readme)
