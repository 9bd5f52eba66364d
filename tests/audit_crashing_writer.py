"""A zygote whose audit writers die once, right after a commit and before acknowledging
it (the window where a record is stored but its gateway cannot know): the first writer
to reach batch number $AUDIT_CRASH_AT while the file $AUDIT_CRASH_MARKER is absent."""

from __future__ import annotations

import os
from pathlib import Path

from gateway.audit import writer_child, writer_zygote

_stored = writer_child.Acknowledger.stored
_batches = [0]


def stored_then_crash(self: writer_child.Acknowledger, count: int) -> None:
    _batches[0] += 1
    marker = Path(os.environ["AUDIT_CRASH_MARKER"])
    if _batches[0] == int(os.environ.get("AUDIT_CRASH_AT", "3")) and not marker.exists():
        marker.write_text("crashed")
        os._exit(9)  # committed, not acknowledged
    _stored(self, count)


writer_child.Acknowledger.stored = stored_then_crash  # type: ignore[method-assign]

if __name__ == "__main__":
    writer_zygote.main()
