"""Reading a request's Content-Type and naming its charset, refusing what is unclear.

The gateway decides how to read a body from its Content-Type, and so does the PMS. Two
readers that disagree on the media type or the charset read two different requests out
of one (the UTF-7 identity swap), so every unclear form is refused here: two Content-Type
headers, a media type that is not one `type/subtype` token pair (Rack and PHP cut
`application/x-www-form-urlencoded, text/plain` at the comma), a parameter given twice,
RFC 2231 `charset*=` parameters, a charset Python does not know, and a charset that is
not ASCII-compatible (UTF-7, UTF-16, ISO-2022, EBCDIC): in those, the bytes of
`username=bob` can mean something else to another reader.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from email.message import Message

_ASCII_BYTES = bytes(range(128))
_ASCII_TEXT = _ASCII_BYTES.decode("ascii")
# Stateful encodings: an escape sequence switches what the following ASCII bytes mean,
# although plain ASCII survives a round trip through them.
_STATEFUL = ("iso2022", "hz")
_TOKEN = r"[!#$%&'*+.^_`|~0-9a-z-]+"  # RFC 9110 token (lower case: the media type is lowered first)
_MEDIA_TYPE = re.compile(rf"^{_TOKEN}/{_TOKEN}$")


class UnclearContentType(ValueError):
    """The request's Content-Type cannot be read one way only; answered with 400."""


@dataclass(frozen=True, slots=True)
class ContentType:
    media: str  # lower-cased type/subtype, e.g. application/x-www-form-urlencoded
    charset: str | None  # Python's codec name of the declared charset (utf-8, cp1252), if any
    boundary: str | None  # the multipart boundary, if any

    @property
    def is_form(self) -> bool:
        return self.media == "application/x-www-form-urlencoded"

    @property
    def is_json(self) -> bool:
        """application/json, the +json family and the json spellings frameworks accept."""
        kind, _, subtype = self.media.partition("/")
        return kind in ("application", "text") and "json" in subtype

    @property
    def is_multipart(self) -> bool:
        return self.media.startswith("multipart/")


def codec_name(label: str) -> str:
    """Python's name of the charset `label` (`UTF8` -> `utf-8`, `windows-1252` -> `cp1252`).

    Raises ValueError for unknown labels, codecs that are not text encodings (base64,
    rot13) and charsets that are not ASCII-compatible: every ASCII byte must stand for
    itself, in both directions, with no escape sequences that change that.
    """
    try:
        info = codecs.lookup(label.strip())
    except (LookupError, ValueError):
        raise ValueError(f"unknown charset {label!r}") from None
    name = info.name
    try:
        compatible = (
            getattr(info, "_is_text_encoding", True)
            and not name.replace("-", "_").startswith(_STATEFUL)
            and _ASCII_BYTES.decode(name) == _ASCII_TEXT
            and _ASCII_TEXT.encode(name) == _ASCII_BYTES
        )
    except (UnicodeError, LookupError, TypeError):
        compatible = False
    if not compatible:
        raise ValueError(f"charset {label!r} is not ASCII-compatible (UTF-8 or a legacy single-byte charset is)")
    return name


def read_content_type(values: Sequence[str]) -> ContentType | None:
    """The one Content-Type of a request (None when it has none), or UnclearContentType."""
    if not values:
        return None
    if len(values) > 1:
        raise UnclearContentType("more than one Content-Type header")
    return _read_one(values[0])


@lru_cache(maxsize=512)  # the email parser is slow; a PMS sends a handful of distinct values
def _read_one(value: str) -> ContentType | None:
    header = Message()
    header["Content-Type"] = value
    params = header.get_params(header="content-type") or [("", "")]
    media = params[0][0].strip().lower()
    if not media:
        return None
    if not _MEDIA_TYPE.match(media):
        # `application/x-www-form-urlencoded, text/plain` is a form to Rack and PHP (they
        # cut at `,`), an unknown type here: a body nobody would read as the PMS does.
        raise UnclearContentType("the Content-Type is no single type/subtype")
    seen: dict[str, str] = {}
    for key, value in params[1:]:
        key = key.strip().lower()
        if key in seen:
            raise UnclearContentType(f"Content-Type parameter {key!r} given twice")
        if not isinstance(value, str) or "*" in key:
            raise UnclearContentType(f"Content-Type parameter {key!r} in RFC 2231 form")
        seen[key] = value
    charset = seen.get("charset")
    if charset is not None:
        try:
            charset = codec_name(charset)
        except ValueError as exc:
            raise UnclearContentType(str(exc)) from None
    return ContentType(media=media, charset=charset, boundary=seen.get("boundary") or None)
