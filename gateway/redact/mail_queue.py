"""The SMTP relay's delivery queue: redacted mail accepted from the PMS, not yet delivered.

Store and forward, as every MTA does: the relay answers the PMS 250 only once the
redacted message is in this queue (sealed, fsynced, 0600: `sealed_files`, the same code
as the hold queue), and the delivery worker (`delivery`) takes it from there. A PMS that
does not retry (many do not) never loses a confirmation to a smarthost that is down.

Each file holds the message and its delivery state per recipient (pending, delivered,
failed with the smarthost's reply), the attempt count and the next attempt time, so a
restarted gateway resumes exactly where the last one stopped; only pending recipients are
tried again. A crash between the smarthost's 250 and the state write sends the message
once more, with the same Message-ID (at-least-once: the receiving side can recognise it).

The running gateway is the only deliverer of a queue directory (`deliverer_lock`, held for
its lifetime); the `pms-gateway mail` commands change a file under `state_lock`, which the
deliverer also takes to write its results, so neither overwrites the other's change.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from gateway.redact.sealed_files import SealedFiles, Unreadable, id_time, valid_id
from gateway.sessions.sealed import Cipher

QUEUE_DIR = "queue"
SUFFIX = ".mail"
FIRST_RETRY = 60.0  # seconds; doubled after each further failure
MAX_RETRY = 3600.0

State = Literal["pending", "delivered", "failed"]

__all__ = ["MailQueue", "QueuedMessage", "Recipient", "QueueNotFound", "queue_dir", "retry_delay", "Unreadable"]


class QueueNotFound(LookupError):
    """No queued message with that id."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "no such queued message"


def retry_delay(attempts: int) -> float:
    """Wait after the `attempts`-th failed attempt: 1 min, 2, 4, ... capped at 1 h."""
    return min(FIRST_RETRY * 2 ** max(attempts - 1, 0), MAX_RETRY)


@dataclass(slots=True)
class Recipient:
    address: str
    state: State = "pending"
    code: int = 0  # the smarthost's last reply code for this recipient (0: none yet)
    reply: str = ""  # its last reply text, or the connection error


@dataclass(slots=True)
class QueuedMessage:
    """A redacted message with its envelope and delivery state."""

    id: str
    queued_at: float
    mail_from: str
    recipients: list[Recipient]
    data: bytes
    mail_options: list[str] = field(default_factory=list)
    message_id: str | None = None
    channel: str = "mail"
    detectors: dict[str, int] = field(default_factory=dict)
    attempts: int = 0
    next_attempt: float = 0.0
    warned: bool = False  # the operator was told it is late (mail_delayed)

    @classmethod
    def new(
        cls, queue_id: str, now: float, data: bytes, mail_from: str, rcpt_tos: list[str], mail_options: list[str],
        *, message_id: str | None, channel: str, detectors: dict[str, int],
    ) -> QueuedMessage:
        """A message just accepted: every recipient pending (duplicates once), due now."""
        return cls(queue_id, now, mail_from, [Recipient(r) for r in dict.fromkeys(rcpt_tos)], data,
                   mail_options=list(mail_options), message_id=message_id, channel=channel,
                   detectors=dict(detectors), next_attempt=now)

    def pending(self) -> list[Recipient]:
        return [r for r in self.recipients if r.state == "pending"]

    def to_bytes(self) -> bytes:
        fields = asdict(self)
        fields["data"] = base64.b64encode(self.data).decode("ascii")
        return json.dumps(fields).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> QueuedMessage:
        fields = json.loads(raw)
        fields["data"] = base64.b64decode(fields["data"])
        fields["recipients"] = [Recipient(**r) for r in fields["recipients"]]
        return cls(**fields)


def queue_dir(data_dir: Path) -> Path:
    return Path(data_dir) / QUEUE_DIR


class MailQueue:
    """Queued messages in one directory, sealed with `cipher` (the operator's key ring).

    All methods block (file I/O, fsync, flock): async callers run them in a thread."""

    def __init__(self, directory: Path, cipher: Cipher) -> None:
        self.files = SealedFiles(directory, cipher, "mail-queue", SUFFIX)
        self.directory = self.files.directory

    def _check(self, message_id: str) -> None:
        if not valid_id(message_id):
            raise QueueNotFound(f"{message_id!r:.80} is not a queued message id (see `pms-gateway mail queue`)")

    def put(self, message: QueuedMessage) -> None:
        """Write (or rewrite) `message`; returns once it is durable."""
        self.files.write(message.id, message.to_bytes())

    def update(self, message: QueuedMessage) -> bool:
        """Write the state of a message that is still queued; False (nothing written) if an
        operator dropped it meanwhile."""
        with self.state_lock():
            if not self.files.exists(message.id):
                return False
            self.put(message)
            return True

    def get(self, message_id: str) -> QueuedMessage:
        self._check(message_id)
        try:
            plain = self.files.read(message_id)
        except Unreadable:
            raise QueueNotFound(f"queued message {message_id} cannot be opened with this key (or was altered)") from None
        if plain is None:
            raise QueueNotFound(f"no queued message {message_id}")
        return QueuedMessage.from_bytes(plain)

    def ids(self) -> list[str]:
        """Queued ids, oldest first."""
        return self.files.ids()

    def delete(self, message_id: str) -> bool:
        """Remove a message from disk (delivered, failed for good, expired or dropped)."""
        self._check(message_id)
        return self.files.delete(message_id)

    def depth_and_oldest(self) -> tuple[int, int | None]:
        """How many messages wait and when the oldest arrived (epoch seconds), from the file
        names alone: the metrics read this without the key."""
        ids = self.ids()
        return len(ids), (id_time(ids[0]) if ids else None)

    @contextlib.contextmanager
    def state_lock(self) -> Iterator[None]:
        """Exclusive while a file's state is read-modified-written (across processes)."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.directory / ".state.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def deliverer_lock(self) -> int | None:
        """Become the one deliverer of this queue: an open descriptor holding the lock (keep
        it open as long as you deliver), or None when another process delivers already."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.directory / ".deliverer.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd
