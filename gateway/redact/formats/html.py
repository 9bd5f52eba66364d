"""Redaction inside HTML without touching the markup.

Only text nodes and the values of attributes that carry content (href, title, alt,
value, ...) are rewritten; tags, comments' delimiters, scripts and styles stay byte for
byte. Positions come from the stdlib `html.parser`, which tolerates the broken markup
that PMS templates produce.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from urllib.parse import quote, unquote

from gateway.redact.formats.base import Rewrite
from gateway.redact.outcome import Finding

CONTENT_ATTRIBUTES: frozenset[str] = frozenset(
    {"href", "src", "title", "alt", "value", "content", "placeholder", "label",
     "aria-label", "summary", "cite", "action"}
)
"""Attributes whose values are shown or sent somewhere (plus every data-* attribute)."""

_URL_ATTRIBUTES = frozenset({"href", "src", "cite", "action"})
_RAW_TEXT = frozenset({"script", "style"})
_ATTRIBUTE = re.compile(
    r"""([^\s"'>/=]+)(\s*=\s*)(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+))""", re.S
)


class _Segments(HTMLParser):
    """Records where text nodes, start tags and comments begin in the source."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.events: list[tuple[str, int]] = []
        self._line_starts = [0]
        self._raw_text_tag: str | None = None

    def index(self, source: str) -> None:
        self._line_starts = [0] + [m.end() for m in re.finditer("\n", source)]
        self.feed(source)
        self.close()

    def _offset(self) -> int:
        line, column = self.getpos()
        return self._line_starts[line - 1] + column

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.events.append(("tag", self._offset()))
        self._raw_text_tag = tag if tag in _RAW_TEXT else None

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.events.append(("tag", self._offset()))

    def handle_endtag(self, tag: str) -> None:
        self.events.append(("other", self._offset()))
        self._raw_text_tag = None

    def handle_data(self, data: str) -> None:
        kind = "raw" if self._raw_text_tag else "text"
        self.events.append((kind, self._offset()))

    def handle_comment(self, data: str) -> None:
        self.events.append(("comment", self._offset()))

    def handle_decl(self, decl: str) -> None:
        self.events.append(("other", self._offset()))

    def handle_pi(self, data: str) -> None:
        self.events.append(("other", self._offset()))

    def unknown_decl(self, data: str) -> None:
        self.events.append(("other", self._offset()))


def _rewrite_text(raw: str, location: str, rewrite: Rewrite) -> tuple[str, list[Finding]]:
    text = html.unescape(raw)
    new, findings = rewrite(location, text)
    if new == text:
        return raw, findings
    return html.escape(new, quote=False), findings


def _rewrite_value(name: str, raw: str, quote_char: str, location: str,
                   rewrite: Rewrite) -> tuple[str, list[Finding]]:
    value = html.unescape(raw)
    new, findings = rewrite(location, value)
    if name in _URL_ATTRIBUTES and "%" in new:
        # "mailto:jana%40example.cz", "?phone=%2B420..." hide values from detectors.
        decoded = unquote(new)
        if decoded != new:
            redacted, more = rewrite(location, decoded)
            if more:
                new, findings = quote(redacted, safe=":/?&=#;,+@!$'()*~%"), findings + more
    if new == value:
        return raw, findings
    escaped = html.escape(new, quote=False)
    if quote_char:
        escaped = escaped.replace(quote_char, "&quot;" if quote_char == '"' else "&#x27;")
    elif not escaped or re.search(r"[\s\"'=<>`]", escaped):
        escaped = '"' + escaped.replace('"', "&quot;") + '"'  # unquoted values end at a space
    return escaped, findings


def _rewrite_tag(raw: str, location: str, rewrite: Rewrite) -> tuple[str, list[Finding]]:
    findings: list[Finding] = []
    name_end = re.match(r"<[^\s/>]*", raw)
    head = name_end.end() if name_end else 0

    def replace(match: re.Match[str]) -> str:
        name = match.group(1).lower()
        if name not in CONTENT_ATTRIBUTES and not name.startswith("data-"):
            return match.group(0)
        for group, quote_char in ((3, '"'), (4, "'"), (5, "")):
            if match.group(group) is not None:
                new, found = _rewrite_value(name, match.group(group), quote_char,
                                            f"{location}@{name}", rewrite)
                findings.extend(found)
                start, end = match.span(group)
                whole = match.group(0)
                base = match.start(0)
                return whole[: start - base] + new + whole[end - base :]
        return match.group(0)

    return raw[:head] + _ATTRIBUTE.sub(replace, raw[head:]), findings


def _rewrite_comment(raw: str, location: str, rewrite: Rewrite) -> tuple[str, list[Finding]]:
    if not (raw.startswith("<!--") and raw.endswith("-->")):
        return raw, []
    body = raw[4:-3]
    new, findings = rewrite(location, body)
    if "--" in new or new.endswith("-"):
        new = body if not findings else new.replace("--", "- -").rstrip("-")
    return "<!--" + new + "-->", findings


_HANDLERS = {"text": _rewrite_text, "tag": _rewrite_tag, "comment": _rewrite_comment}


def segments(source: str) -> list[tuple[str, int, int]]:
    """(kind, start, end) for every parser event, covering the source end to end."""
    parser = _Segments()
    parser.index(source)
    starts = parser.events
    result = []
    for i, (kind, start) in enumerate(starts):
        end = starts[i + 1][1] if i + 1 < len(starts) else len(source)
        if end > start:
            result.append((kind, start, end))
    return result


def rewrite_html(source: str, location: str, rewrite: Rewrite) -> tuple[str, list[Finding]]:
    """The HTML with its text and content attributes rewritten, markup unchanged."""
    pieces: list[str] = []
    findings: list[Finding] = []
    position = 0
    for kind, start, end in segments(source):
        if start < position:
            continue
        pieces.append(source[position:start])
        handler = _HANDLERS.get(kind)
        if handler is None:
            pieces.append(source[start:end])
        else:
            new, found = handler(source[start:end], f"{location}#{kind}", rewrite)
            pieces.append(new)
            findings.extend(found)
        position = end
    pieces.append(source[position:])
    return "".join(pieces), findings


_BLOCK_TAGS = re.compile(r"(?i)<(?:br|p|div|tr|li|h[1-6]|table|td)\b[^>]*>")


def visible_text(source: str) -> str:
    """Roughly what a reader sees: used to learn names from salutations split by tags."""
    text = []
    for kind, start, end in segments(source):
        raw = source[start:end]
        if kind == "text":
            text.append(html.unescape(raw))
        elif kind in {"tag", "other"} and _BLOCK_TAGS.match(raw):
            text.append("\n")
    return "".join(text)
