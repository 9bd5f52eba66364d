"""Redaction inside HTML without touching the markup.

Only text and the values of attributes that carry content (href, title, alt, value, ...)
are rewritten; tags, comment delimiters, scripts and styles stay byte for byte, and so
does every character of text that is not replaced (entities included). Positions come
from the stdlib `html.parser`, which tolerates the broken markup PMS templates produce.

Text is scanned as a reader sees it, not node by node: in
`<th>Passport number</th><td>533401872</td>` the context word and the number are in
different nodes, and in `<b>4111</b> 1111 1111 1111` so are the parts of one card. The
text nodes are joined (table cells by a tab, blocks by a line break, inline elements by
nothing), the engine plans its edits on that text, and each edit is applied to the
nodes it covers.
"""

from __future__ import annotations

import html
import re
from bisect import bisect_right
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import quote, unquote

from gateway.redact.formats.base import Edit, Plan, Rewrite
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
_BLOCK = re.compile(
    r"(?i)</?(?:br|p|div|tr|li|ul|ol|h[1-6]|table|thead|tbody|tfoot|hr|blockquote|pre|"
    r"section|article|header|footer|title|head|body|html|caption|dl|dt|dd)\b"
)
_CELL = re.compile(r"(?i)</?(?:td|th)\b")
_ENTITY_OR_CHAR = re.compile(r"&(?:#[0-9]+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);?|.", re.S)
_MAX_PASSES = 4


class _Segments(HTMLParser):
    """Records where text nodes, tags and comments begin in the source."""

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
        self.events.append(("end", self._offset()))
        self._raw_text_tag = None

    def handle_data(self, data: str) -> None:
        self.events.append(("raw" if self._raw_text_tag else "text", self._offset()))

    def handle_comment(self, data: str) -> None:
        self.events.append(("comment", self._offset()))

    def handle_decl(self, decl: str) -> None:
        self.events.append(("other", self._offset()))

    def handle_pi(self, data: str) -> None:
        self.events.append(("other", self._offset()))

    def unknown_decl(self, data: str) -> None:
        self.events.append(("other", self._offset()))


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


def _escape(text: str) -> str:
    """HTML-escaped and ASCII-only, so it fits any charset the part declares."""
    escaped = html.escape(text, quote=False)
    return "".join(c if ord(c) < 128 else f"&#{ord(c)};" for c in escaped)


# -- text, as a reader sees it -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Node:
    """One text node: its raw source range, and where its characters sit in the flow."""

    raw_start: int
    raw_end: int
    flow_start: int
    chars: list[tuple[int, int, str]]  # per token: raw start, raw end, decoded text

    @property
    def flow_end(self) -> int:
        return self.flow_start + sum(len(text) for _, _, text in self.chars)


def _tokens(raw: str, offset: int) -> list[tuple[int, int, str]]:
    """The node split into characters and entities, each with its decoded text."""
    return [(offset + m.start(), offset + m.end(), html.unescape(m.group()))
            for m in _ENTITY_OR_CHAR.finditer(raw)]


class _TextFlow:
    """The text nodes of a document joined into the text a reader sees."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.nodes: list[_Node] = []
        parts: list[str] = []
        length = 0
        separator = ""
        for kind, start, end in segments(source):
            raw = source[start:end]
            if kind != "text":
                separator = max(separator, _separator(kind, raw), key=_SEPARATOR_RANK.index)
                continue
            if parts and separator:
                parts.append(separator)
                length += len(separator)
            separator = ""
            chars = _tokens(raw, start)
            decoded = "".join(text for _, _, text in chars)
            self.nodes.append(_Node(start, end, length, chars))
            parts.append(decoded)
            length += len(decoded)
        self.text = "".join(parts)
        self._starts = [node.flow_start for node in self.nodes]

    def apply(self, edits: list[Edit]) -> str:
        """The source with each edit applied to the raw characters it covers."""
        replacements: list[tuple[int, int, str]] = []
        for edit in edits:
            replacements.extend(self._raw_edits(edit))
        if not replacements:
            return self.source
        pieces: list[str] = []
        position = 0
        for raw_start, raw_end, text in sorted(replacements):
            if raw_start < position:
                continue
            pieces.append(self.source[position:raw_start])
            pieces.append(_escape(text))
            position = raw_end
        pieces.append(self.source[position:])
        return "".join(pieces)

    def _raw_edits(self, edit: Edit) -> list[tuple[int, int, str]]:
        """Source ranges an edit covers, each with its share of the replacement.

        A replacement as long as the value (a mask) is shared out character by character,
        leaving characters it keeps (separators, `&nbsp;`) as written; any other (a label)
        goes whole into the first piece.
        """
        same_length = len(edit.replacement) == edit.end - edit.start
        result = []
        first = True
        index = max(0, bisect_right(self._starts, edit.start) - 1)
        for node in self.nodes[index:]:
            if node.flow_start >= edit.end:
                break
            position = node.flow_start
            covered: list[tuple[int, int, str]] = []  # raw range, replacement share
            for raw_start, raw_end, text in node.chars:
                end = position + len(text)
                if position < edit.end and end > edit.start:
                    low, high = max(position, edit.start), min(end, edit.end)
                    share = edit.replacement[low - edit.start : high - edit.start]
                    if not (same_length and share == text):
                        covered.append((raw_start, raw_end, share))
                position = end
            if not covered:
                continue
            if same_length:
                result.extend(covered)
            else:
                result.append((covered[0][0], covered[-1][1], edit.replacement if first else ""))
                first = False
        return result


_SEPARATOR_RANK = ("", "\t", "\n")


def _separator(kind: str, raw: str) -> str:
    """What a tag between two text nodes reads as: nothing, a cell break, a line break."""
    if kind == "raw" or _BLOCK.match(raw):
        return "\n"
    if _CELL.match(raw):
        return "\t"
    return ""


def visible_text(source: str) -> str:
    """The text a reader sees (used to learn names from salutations split by tags)."""
    return _TextFlow(source).text


def _rewrite_text(source: str, location: str, plan: Plan) -> tuple[str, list[Finding]]:
    findings: list[Finding] = []
    for _ in range(_MAX_PASSES):
        flow = _TextFlow(source)
        edits = plan(location, flow.text)
        if not edits:
            break
        rewritten = flow.apply(edits)
        if rewritten == source:
            findings.extend(edit.finding for edit in edits)  # kept values still count
            break
        findings.extend(edit.finding for edit in edits)
        source = rewritten
    return source, findings


# -- markup: attribute values and comments -------------------------------------------


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
    escaped = _escape(new)
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
                base = match.start(0)
                start, end = match.start(group) - base, match.end(group) - base
                whole = match.group(0)
                return whole[:start] + new + whole[end:]
        return match.group(0)

    return raw[:head] + _ATTRIBUTE.sub(replace, raw[head:]), findings


def _rewrite_comment(raw: str, location: str, rewrite: Rewrite) -> tuple[str, list[Finding]]:
    if not (raw.startswith("<!--") and raw.endswith("-->")):
        return raw, []
    body = raw[4:-3]
    new, findings = rewrite(location, body)
    if new == body:
        return raw, findings
    if "--" in new or new.endswith("-"):
        new = new.replace("--", "- -").rstrip("-")  # keep the comment a comment
    return "<!--" + new + "-->", findings


_MARKUP = {"tag": _rewrite_tag, "comment": _rewrite_comment}


def _rewrite_markup(source: str, location: str, rewrite: Rewrite) -> tuple[str, list[Finding]]:
    pieces: list[str] = []
    findings: list[Finding] = []
    position = 0
    for kind, start, end in segments(source):
        handler = _MARKUP.get(kind)
        if handler is None:
            continue
        new, found = handler(source[start:end], f"{location}#{kind}", rewrite)
        if new != source[start:end]:
            pieces.append(source[position:start])
            pieces.append(new)
            position = end
        findings.extend(found)
    pieces.append(source[position:])
    return "".join(pieces), findings


def rewrite_html(source: str, location: str, rewrite: Rewrite,
                 plan: Plan) -> tuple[str, list[Finding]]:
    """The HTML with its text and content attributes redacted, its markup unchanged."""
    source, findings = _rewrite_text(source, f"{location}#text", plan)
    source, more = _rewrite_markup(source, location, rewrite)
    return source, findings + more
