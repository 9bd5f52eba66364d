"""Help texts as the terminal shows them: a line ends where a sentence ends.

Typer keeps the single line breaks of a docstring's later paragraphs, so a docstring
wrapped at the source's width showed "settings that are" / "legal but probably wrong"
on two lines of an otherwise wide terminal. `reflow_help` rewrites every command's help
once, after the commands are registered: each paragraph's lines are joined, then broken
after each sentence; the terminal wraps a long sentence at its own width. Indented lines
and list items (`- `, `* `, `1. `) keep their breaks: they are laid out on purpose.
"""

from __future__ import annotations

import inspect
import re

import typer

# After . ! or ? and before what starts a sentence; "e.g." and "i.e." end none.
_SENTENCE_END = re.compile(r"(?<!e\.g\.)(?<!i\.e\.)(?<=[.!?])\s+(?=[A-Z`\"'(])")
_LAID_OUT = re.compile(r"^(\s+|[-*] |\d+\. )")


def reflow(text: str | None) -> str | None:
    """`text` with each paragraph one sentence a line (None and laid-out paragraphs as they are)."""
    if not text:
        return text
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(p if _laid_out(p) else _SENTENCE_END.sub("\n", " ".join(p.split())) for p in paragraphs)


def _laid_out(paragraph: str) -> bool:
    return any(_LAID_OUT.match(line) for line in paragraph.splitlines()[1:]) or paragraph.startswith("\b")


def reflow_help(app: typer.Typer) -> None:
    """Reflow the help of every command and group of `app`, sub-apps included."""
    for command in app.registered_commands:
        command.help = reflow(command.help if isinstance(command.help, str) else inspect.getdoc(command.callback))
    callback = app.registered_callback
    if callback is not None and callback.callback is not None:
        callback.help = reflow(callback.help if isinstance(callback.help, str) else inspect.getdoc(callback.callback))
    for group in app.registered_groups:
        if isinstance(group.help, str):
            group.help = reflow(group.help)
        if group.typer_instance is not None:
            if isinstance(group.typer_instance.info.help, str):
                group.typer_instance.info.help = reflow(group.typer_instance.info.help)
            reflow_help(group.typer_instance)
