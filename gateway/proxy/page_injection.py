"""Adding the gateway's own markup to the PMS's HTML pages, however the PMS sent them.

A real PMS compresses its pages (gzip, br, deflate, or a chain of them) and often names
no charset. Every feature that adds something to a PMS page (the "why you must sign in
again" notice, the hidden-links stylesheet) goes through `inject_html`, which decodes the
Content-Encoding, inserts ASCII markup at a tag boundary, encodes again with the same
codings and fixes Content-Length. Whenever it cannot be sure of the result it leaves the
answer exactly as the PMS sent it: an unknown or broken coding, trailing bytes after the
compressed stream, a page over the size limits, a partial answer (206), a charset in
which ASCII bytes may mean something else (UTF-16, UTF-7, ISO-2022: an ESC byte in a page
without a declared charset counts as such), or a Content-Type that cannot be read one way.

Markup is inserted as bytes, never by decoding and re-encoding the text: in every
ASCII-compatible charset `<`, `>` and `/` stand for themselves (they are never the second
byte of a multi-byte character), so the page's own bytes stay untouched.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import brotli

from gateway.proxy.exchange import UpstreamAnswer
from gateway.proxy.forward import BodyTooLarge
from gateway.readers.content_type import ContentType, UnclearContentType, codec_name, read_content_type

MAX_WIRE_BYTES = 4 * 1024 * 1024  # larger answers (as sent) pass untouched
MAX_PAGE_BYTES = 8 * 1024 * 1024  # ... and so do pages larger than this once decoded
_SNIFF_BYTES = 1024  # where a browser looks for <meta charset> (HTML standard: 1024 bytes)

_HEAD_END = re.compile(rb"</head\s*>", re.IGNORECASE)
_BODY_START = re.compile(rb"<body(?=[\s/>])[^>]*>", re.IGNORECASE)
_META_CHARSET = re.compile(rb"""<meta[^>]*?charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
_UNSAFE_BOMS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")  # UTF-16/32: not ASCII-compatible
# Headers that vouch for the exact bytes of the PMS's answer, no longer true once edited.
_BYTE_VALIDATORS = ("ETag", "Content-MD5", "Digest", "Content-Digest", "Repr-Digest")


@dataclass(frozen=True, slots=True)
class Insertion:
    """ASCII markup and where it goes.

    `head`: just before `</head>` (else right after `<body ...>`; a fragment with neither
    is left alone). `body`: right after `<body ...>` (else at the very start). `page`:
    right after `<body ...>` only (a fragment a script fetched into a page is left alone).
    """

    markup: str
    where: Literal["head", "body", "page"]

    def __post_init__(self) -> None:
        if not self.markup.isascii():
            raise ValueError("injected markup must be ASCII (it is inserted into pages of any ASCII-compatible charset)")


async def inject_html(method: str, answer: UpstreamAnswer, insertions: list[Insertion]) -> bool:
    """Insert `insertions` into the PMS's HTML answer; False when it was left untouched."""
    if not insertions or method == "HEAD" or answer.status in (204, 206, 304) or answer.status < 200:
        return False
    content_type = _html_type(answer)
    if "Content-Range" in answer.headers or content_type is None:
        return False
    codings = _codings(answer)
    if codings is None:
        return False
    length = answer.headers.get("Content-Length")
    if length is not None and (not length.isdigit() or int(length) > MAX_WIRE_BYTES):
        return False
    try:
        wire = await answer.read_body(MAX_WIRE_BYTES)
    except BodyTooLarge:
        return False  # what was read is kept: the answer is relayed whole
    decoded = _decode(wire, codings)
    if decoded is None or not _ascii_compatible(content_type, decoded[0]):
        return False
    page, flavours = decoded
    edited = _insert(page, insertions)
    if edited is None:
        return False
    answer.replace_body(_encode(edited, codings, flavours))
    for name in _BYTE_VALIDATORS:
        answer.headers.popall(name, None)
    return True


async def read_decoded(answer: UpstreamAnswer) -> bytes | None:
    """The answer's body with its Content-Encoding undone (the bytes a browser would
    render), or None when that cannot be done with certainty (unknown or broken coding,
    too large). The answer itself is relayed unchanged."""
    codings = _codings(answer)
    if codings is None:
        return None
    try:
        wire = await answer.read_body(MAX_WIRE_BYTES)
    except BodyTooLarge:
        return None
    decoded = _decode(wire, codings)
    return None if decoded is None else decoded[0]


def _html_type(answer: UpstreamAnswer) -> ContentType | None:
    """The answer's Content-Type if it is one clear text/html."""
    try:
        content_type = read_content_type(answer.headers.getall("Content-Type", []))
    except UnclearContentType:
        return None
    return content_type if content_type is not None and content_type.media == "text/html" else None


def _codings(answer: UpstreamAnswer) -> list[str] | None:
    """The Content-Encoding chain in the order applied, or None if one is not understood."""
    codings = []
    for value in answer.headers.getall("Content-Encoding", []):
        for coding in value.split(","):
            coding = coding.strip().lower()
            if coding in ("", "identity"):
                continue
            if coding not in _CODECS:
                return None
            codings.append("gzip" if coding == "x-gzip" else coding)
    return codings


def _ascii_compatible(content_type: ContentType, page: bytes) -> bool:
    """True when ASCII markup can go between the page's tags byte for byte."""
    if content_type.charset is not None:  # read_content_type refused any other charset
        return not page.startswith(_UNSAFE_BOMS)  # a BOM overrides the header in browsers
    if page.startswith(_UNSAFE_BOMS) or b"\x1b" in page:
        return False  # UTF-16/32, or escape sequences of a stateful charset (ISO-2022-JP)
    meta = _META_CHARSET.search(page[:_SNIFF_BYTES])
    if meta is None:
        return True  # the browser's default is UTF-8 or a legacy single-byte charset
    try:
        codec_name(meta.group(1).decode("ascii"))
    except ValueError:
        return False
    return True


def _insert(page: bytes, insertions: list[Insertion]) -> bytes | None:
    """The page with every insertion in place, or None if none had a place."""
    edits: list[tuple[int, bytes]] = []
    body = _BODY_START.search(page)
    for insertion in insertions:
        markup = insertion.markup.encode("ascii")
        if insertion.where == "head" and (head := _HEAD_END.search(page)) is not None:
            edits.append((head.start(), markup))
        elif body is not None:
            edits.append((body.end(), markup))
        elif insertion.where == "body":
            edits.append((0, markup))
    if not edits:
        return None
    for at, markup in sorted(edits, key=lambda edit: edit[0], reverse=True):
        page = page[:at] + markup + page[at:]
    return page


# -- Content-Encoding: decode with bounded output, encode the same way -----------------------


def _decode(wire: bytes, codings: list[str]) -> tuple[bytes, list[int]] | None:
    """Undo the codings (last applied first); None if any is broken, trailed or too large."""
    data, flavours = wire, []
    for coding in reversed(codings):
        decoded = _CODECS[coding][0](data)
        if decoded is None:
            return None
        data, flavour = decoded
        flavours.append(flavour)
    return data, list(reversed(flavours))


def _encode(page: bytes, codings: list[str], flavours: list[int]) -> bytes:
    for coding, flavour in zip(codings, flavours, strict=True):
        page = _CODECS[coding][1](page, flavour)
    return page


def _zlib_decode(data: bytes, wbits: int) -> bytes | None:
    decoder = zlib.decompressobj(wbits)
    try:
        out = decoder.decompress(data, MAX_PAGE_BYTES + 1)
    except zlib.error:
        return None
    if len(out) > MAX_PAGE_BYTES or decoder.unconsumed_tail or decoder.unused_data or not decoder.eof:
        return None  # too large, a second gzip member or trailing bytes, or cut short
    return out


def _zlib_encode(page: bytes, wbits: int) -> bytes:
    encoder = zlib.compressobj(6, zlib.DEFLATED, wbits)
    return encoder.compress(page) + encoder.flush()


def _gunzip(data: bytes) -> tuple[bytes, int] | None:
    out = _zlib_decode(data, 16 + zlib.MAX_WBITS)
    return None if out is None else (out, 16 + zlib.MAX_WBITS)


def _inflate(data: bytes) -> tuple[bytes, int] | None:
    # HTTP's "deflate" is the zlib format; some servers send raw deflate: answer in kind.
    for wbits in (zlib.MAX_WBITS, -zlib.MAX_WBITS):
        out = _zlib_decode(data, wbits)
        if out is not None:
            return out, wbits
    return None


def _unbrotli(data: bytes) -> tuple[bytes, int] | None:
    decoder = brotli.Decompressor()
    try:
        out = decoder.process(data, output_buffer_limit=MAX_PAGE_BYTES + 1)
    except brotli.error:
        return None
    if len(out) > MAX_PAGE_BYTES or not decoder.is_finished():
        return None
    return out, 0


def _brotli(page: bytes, _: int) -> bytes:
    return brotli.compress(page, quality=5)  # 11, the default, takes seconds on a large page


_CODECS: dict[str, tuple[Callable[[bytes], tuple[bytes, int] | None], Callable[[bytes, int], bytes]]] = {
    "gzip": (_gunzip, _zlib_encode),
    "x-gzip": (_gunzip, _zlib_encode),
    "deflate": (_inflate, _zlib_encode),
    "br": (_unbrotli, _brotli),
}
