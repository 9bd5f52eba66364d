"""Field paths in a channel rule: `Body`, `message.text`, `to[].name`.

Paths name a key in a form or multipart body, or a dotted path into JSON where `[]`
means "every element of this list" (and may be left out: `to.name` is the same path).
A path also covers everything below it: `message` selects `message.text` and
`message.subject`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from gateway.redact.presets import TEMPLATE_NAME_KEYS, template_key

if TYPE_CHECKING:
    from gateway.redact.policy import ChannelRule

_INDEX = re.compile(r"\[\d*\]")


def normalise(path: str) -> str:
    """'to[0].name', 'to[].name' and 'to.name' all become 'to.name'."""
    return _INDEX.sub("", path).strip(".")


class FieldSelector:
    """Which fields a channel redacts, which hold the recipient (or other routing data,
    kept), which hold names, and which hold HTML or a whole e-mail."""

    def __init__(self, fields: Sequence[str], recipient: str | Sequence[str] | None,
                 name_fields: Sequence[str], *, keep: Sequence[str] = (),
                 templates: Sequence[str] = (), html: Sequence[str] = (),
                 mime: Sequence[str] = ()) -> None:
        recipients = (recipient,) if isinstance(recipient, str) else tuple(recipient or ())
        self._fields = tuple(normalise(f) for f in fields)
        self._recipients = tuple(normalise(r) for r in recipients)
        self._keep = tuple(normalise(k) for k in keep)
        self._names = tuple(normalise(f) for f in name_fields)
        self._templates = tuple(normalise(t) for t in templates)
        self._html = tuple(normalise(h) for h in html)
        self._mime = tuple(normalise(m) for m in mime)

    @classmethod
    def for_channel(cls, channel: ChannelRule, fields: Sequence[str] | None = None) -> FieldSelector:
        """The selector a channel rule describes (`fields` overrides its field list)."""
        return cls(
            channel.fields if fields is None else fields, channel.recipient_fields,
            channel.name_fields, keep=channel.keep_fields, templates=channel.template_fields,
            html=channel.html_fields, mime=channel.mime_fields,
        )

    @staticmethod
    def _covers(patterns: Sequence[str], path: str) -> bool:
        return any(path == p or path.startswith(p + ".") for p in patterns)

    def is_recipient(self, path: str) -> bool:
        """Routing data (the recipient, or a kept field): passed unchanged."""
        normal = normalise(path)
        return self._covers(self._recipients, normal) or self._covers(self._keep, normal)

    def is_destination(self, path: str) -> bool:
        """The recipient proper (whose display names tell the guest's name)."""
        return self._covers(self._recipients, normalise(path))

    def redacts(self, path: str) -> bool:
        """Selected for redaction: listed (or nothing listed), and not the recipient."""
        if self.is_recipient(path):
            return False
        return not self._fields or self._covers(self._fields, normalise(path))

    def holds_name(self, path: str) -> bool:
        normal = normalise(path)
        if self._covers(self._names, normal):
            return True
        parent, _, key = normal.rpartition(".")
        return parent in self._templates and template_key(key) in TEMPLATE_NAME_KEYS

    def kind(self, path: str) -> str:
        """How a selected field's value is read: `mime`, `html` or `field` (text)."""
        normal = normalise(path)
        if self._covers(self._mime, normal):
            return "mime"
        if self._covers(self._html, normal):
            return "html"
        return "field"
