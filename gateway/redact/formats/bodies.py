"""HTTP request bodies sent to SMS and e-mail provider APIs: form, JSON, multipart, text.

Unchanged form and JSON fields keep their exact bytes (a provider signature over the
body, or its parser's quirks, are not disturbed by fields nobody touched). A field whose
finding says `drop` is removed from the body. Key names (form keys, JSON object keys)
are scanned as well as values. A multipart body is parsed by python-multipart and
always re-serialised from what it parsed, so no byte the parser skipped (preamble,
epilogue) leaves. A body two readers could read differently (duplicate JSON keys,
RFC 2231 `name*=` parameters, encoded parts) raises `AmbiguousBody`: it is refused,
never guessed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from email.message import Message
from typing import Any, Literal, Protocol
from urllib.parse import quote_plus, unquote_to_bytes

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from gateway.redact.formats.base import Rewrite, Rewritten, UnparsableBody, drops_field
from gateway.redact.formats.fields import FieldSelector
from gateway.redact.names import display_names
from gateway.redact.outcome import Finding
from gateway.redact.policy import ChannelRule

AttachmentRule = Literal["keep", "drop", "block"]


class AmbiguousBody(ValueError):
    """A body the provider might read differently from this parser: refused (blocked),
    not redacted as text, since the text reading could be the wrong one too."""


class BodyDocument(Protocol):
    """What the engine needs from a parsed body."""

    def names(self) -> list[str]: ...

    def texts(self) -> Iterator[tuple[str, str]]: ...

    def rewrite(self, rewrite: Rewrite, attachments: AttachmentRule) -> Rewritten: ...


def content_type_params(content_type: str | None) -> tuple[str, dict[str, str]]:
    """('multipart/form-data', {'boundary': ...}) from a Content-Type header value."""
    header = Message()
    header["Content-Type"] = content_type or "text/plain"
    params = {k.lower(): str(v) for k, v in (header.get_params() or [])[1:]}
    return header.get_content_type(), params


def _charset(params: dict[str, str], default: str = "utf-8") -> str:
    charset = params.get("charset", default)
    try:
        "".encode(charset)
    except LookupError:
        return default
    return charset


_DISPLAY_NAME = re.compile(r'(?P<name>[^,<>"]*|"[^"]*")\s*<(?P<address>[^<>]+)>')


def rewrite_display_names(rewrite: Rewrite, location: str, value: str) -> tuple[str, list[Finding]]:
    """A recipient value with the display names in it redacted, the addresses untouched:
    `Grace Kelly <grace@example.com>` -> `[NAME] <grace@example.com>` in strict mode."""
    if "<" not in value:
        return value, []
    findings: list[Finding] = []

    def display(match: re.Match[str]) -> str:
        name = match.group("name")
        if not name.strip().strip('"').strip():
            return match.group()
        new, found = rewrite(location, name)
        findings.extend(f for f in found if f.action != "keep")
        return match.group().replace(name, new, 1) if found else match.group()

    return _DISPLAY_NAME.sub(display, value), findings


class TextBody:
    """A plain-text body: one field, `body`."""

    def __init__(self, body: bytes, params: dict[str, str]) -> None:
        self.body = body
        self.charset = _charset(params)
        self.text = body.decode(self.charset, "surrogateescape")

    def names(self) -> list[str]:
        return []

    def texts(self) -> Iterator[tuple[str, str]]:
        yield "body", self.text

    def rewrite(self, rewrite: Rewrite, attachments: AttachmentRule) -> Rewritten:
        new, findings = rewrite("body", self.text)
        if new == self.text:
            return Rewritten(self.body, findings)
        return Rewritten(new.encode(self.charset, "surrogateescape"), findings)


_NOT_A_KEY = re.compile(r"[\s@]")


class FormBody:
    """application/x-www-form-urlencoded: `To=%2B44...&Body=Dear+Jana...`."""

    def __init__(
        self, body: bytes, params: dict[str, str], selector: FieldSelector, *, query: bool = False
    ) -> None:
        """`query`: the body is a URL's query string, a form by definition (a body must
        look like one, else it is read as text)."""
        self.body = body
        self.charset = _charset(params)
        self.selector = selector
        self.pairs: list[tuple[bytes, str, str | None]] = []  # raw pair, key, value
        for raw in body.split(b"&"):
            if not raw:
                self.pairs.append((raw, "", None))
                continue
            key_raw, sep, value_raw = raw.partition(b"=")
            key = self._unquote(key_raw)
            self.pairs.append((raw, key, self._unquote(value_raw) if sep else None))
        if not query and (
            not any(v is not None for _, _, v in self.pairs)
            or any(_NOT_A_KEY.search(k) for _, k, _ in self.pairs)
        ):
            raise UnparsableBody("not a form body")  # e.g. a text body sent as form

    def _unquote(self, raw: bytes) -> str:
        return unquote_to_bytes(raw.replace(b"+", b" ")).decode(self.charset, "surrogateescape")

    def names(self) -> list[str]:
        named = [v for _, k, v in self.pairs if v and self.selector.holds_name(k)]
        return named + display_names(
            v for _, k, v in self.pairs if v and self.selector.is_destination(k))

    def texts(self) -> Iterator[tuple[str, str]]:
        for _, key, value in self.pairs:
            if key:
                yield f"key:{key}", key
            if value is not None and self.selector.redacts(key):
                yield f"{self.selector.kind(key)}:{key}", value

    def _encode(self, text: str) -> bytes:
        return quote_plus(text, encoding=self.charset, errors="surrogateescape").encode("ascii")

    def rewrite(self, rewrite: Rewrite, attachments: AttachmentRule) -> Rewritten:
        findings: list[Finding] = []
        out: list[bytes] = []
        changed = False
        for raw, key, value in self.pairs:
            key_raw, sep, value_raw = raw.partition(b"=")
            new_key, found = rewrite(f"key:{key}", key) if key else (key, [])
            findings.extend(found)
            if drops_field(found):
                changed = True
                continue
            if new_key != key:
                key_raw, changed = self._encode(new_key), True
            if value is not None and self.selector.is_destination(key):
                new, found = rewrite_display_names(rewrite, f"recipient:{key}", value)
                findings.extend(found)
                if new != value:
                    value_raw, changed = self._encode(new), True
            if value is not None and self.selector.redacts(key):
                new, found = rewrite(f"{self.selector.kind(key)}:{key}", value)
                findings.extend(found)
                if drops_field(found):
                    changed = True
                    continue
                if new != value:
                    value_raw, changed = self._encode(new), True
            out.append(key_raw + sep + value_raw)
        return Rewritten(b"&".join(out) if changed else self.body, findings)


def _json_objects(node: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, object) for every JSON object at or below `node`, deepest first."""
    children: list[tuple[str, Any]] = []
    if isinstance(node, dict):
        children = [(f"{path}.{k}" if path else str(k), v) for k, v in node.items()]
    elif isinstance(node, list):
        children = [(f"{path}[{i}]", v) for i, v in enumerate(node)]
    for child_path, child in children:
        yield from _json_objects(child, child_path)
    if isinstance(node, dict):
        yield path, node


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json.loads hook: a key given twice is read as the first by some parsers and as the
    last by others, so the body is ambiguous."""
    data = dict(pairs)
    if len(data) != len(pairs):
        raise AmbiguousBody("duplicate key in a JSON object")
    return data


def _json_leaves(node: Any, path: str) -> Iterator[tuple[str, Any, Any]]:
    """(path, container, key) for every string or number below `node`."""
    items: Iterator[tuple[Any, str]]
    if isinstance(node, dict):
        items = ((k, f"{path}.{k}" if path else str(k)) for k in node)
    elif isinstance(node, list):
        items = ((i, f"{path}[{i}]") for i in range(len(node)))
    else:
        return
    for key, child_path in list(items):
        child = node[key]
        if isinstance(child, (dict, list)):
            yield from _json_leaves(child, child_path)
        elif isinstance(child, str) or (isinstance(child, (int, float)) and not isinstance(child, bool)):
            yield child_path, node, key


class JsonBody:
    """application/json: string (and number) leaves selected by field path."""

    def __init__(self, body: bytes, selector: FieldSelector) -> None:
        self.body = body
        self.selector = selector
        try:
            self.data = json.loads(body.decode("utf-8-sig"), object_pairs_hook=_unique_keys)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UnparsableBody(f"not JSON: {exc}") from None
        self.pretty = re.search(rb'"\s*:\s', body) is not None

    def names(self) -> list[str]:
        leaves = list(_json_leaves(self.data, ""))
        named = [str(c[k]) for p, c, k in leaves if self.selector.holds_name(p)]
        return named + display_names(
            c[k] for p, c, k in leaves if isinstance(c[k], str) and self.selector.is_destination(p))

    def texts(self) -> Iterator[tuple[str, str]]:
        for path, container, key in _json_leaves(self.data, ""):
            if self.selector.redacts(path):
                yield f"{self.selector.kind(path)}:{path}", str(container[key])
        for path, node in _json_objects(self.data, ""):
            for key in node:
                yield f"key:{path}.{key}" if path else f"key:{key}", key

    def _rewrite_keys(self, rewrite: Rewrite) -> tuple[bool, list[Finding]]:
        """Scan every object key (guest data can be a key: `{"Jane Doe": ...}`); the
        recipient's own keys are kept, like its values."""
        findings: list[Finding] = []
        changed = False
        for path, node in _json_objects(self.data, ""):
            renamed: dict[str, Any] = {}
            node_changed = False
            for key, value in node.items():
                key_path = f"{path}.{key}" if path else key
                if self.selector.is_recipient(key_path):
                    new, found = key, []
                else:
                    new, found = rewrite(f"key:{key_path}", key)
                findings.extend(found)
                if drops_field(found):
                    node_changed = True
                    continue
                if new in renamed:
                    raise AmbiguousBody("redacted JSON keys collide")
                renamed[new] = value
                node_changed |= new != key
            if node_changed:
                node.clear()
                node.update(renamed)
                changed = True
        return changed, findings

    def rewrite(self, rewrite: Rewrite, attachments: AttachmentRule) -> Rewritten:
        findings: list[Finding] = []
        dropped: list[tuple[Any, Any]] = []
        changed = False
        for path, container, key in list(_json_leaves(self.data, "")):
            if self.selector.is_destination(path) and isinstance(container[key], str):
                new, found = rewrite_display_names(rewrite, f"recipient:{path}", container[key])
                findings.extend(found)
                changed |= new != container[key]
                container[key] = new
            if not self.selector.redacts(path):
                continue
            value = container[key]
            text = value if isinstance(value, str) else json.dumps(value)
            new, found = rewrite(f"{self.selector.kind(path)}:{path}", text)
            findings.extend(found)
            if drops_field(found):
                dropped.append((container, key))
            elif new != text:
                container[key] = new
            changed |= new != text or drops_field(found)
        for container, key in reversed(dropped):
            del container[key]
        keys_changed, key_findings = self._rewrite_keys(rewrite)
        findings.extend(key_findings)
        changed |= keys_changed
        if not changed:
            return Rewritten(self.body, findings)
        separators = (", ", ": ") if self.pretty else (",", ":")
        text = json.dumps(self.data, ensure_ascii=False, separators=separators)
        return Rewritten(text.encode("utf-8", "surrogateescape"), findings)


_PART_ENCODINGS = frozenset(("7bit", "8bit", "binary"))
_EXTENDED_PARAM = re.compile(r"[A-Za-z0-9!#$&+.^_`|~-]\*(?:\d+\*?)?\s*=")  # name*=, name*0*=
_NAME_PARAM = re.compile(r"(?:^|;)\s*name\s*=", re.IGNORECASE)
_STRUCTURAL = frozenset((b"content-disposition", b"content-type", b"content-transfer-encoding"))


class _Part:
    """One multipart part as python-multipart read it."""

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.content = bytearray()
        self.name = ""
        self.filename: bytes | None = None
        self.charset = "utf-8"


def _read_parts(body: bytes, boundary: bytes) -> list[_Part]:
    """The parts of a multipart body, read by python-multipart (a real parser, as
    providers use one); UnparsableBody if it is malformed or truncated."""
    parts: list[_Part] = []
    field, value = bytearray(), bytearray()
    ended = False

    def header_end() -> None:
        parts[-1].headers.append((bytes(field), bytes(value)))
        field.clear()
        value.clear()

    def end() -> None:
        nonlocal ended
        ended = True

    parser = MultipartParser(boundary, {
        "on_part_begin": lambda: parts.append(_Part()),
        "on_header_field": lambda data, start, stop: field.extend(data[start:stop]),
        "on_header_value": lambda data, start, stop: value.extend(data[start:stop]),
        "on_header_end": header_end,
        "on_part_data": lambda data, start, stop: parts[-1].content.extend(data[start:stop]),
        "on_end": end,
    })  # fmt: skip
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError as exc:
        raise UnparsableBody(f"malformed multipart body: {exc}") from None
    if not ended or not parts:
        raise UnparsableBody("multipart body without parts or closing delimiter")
    return parts


def _describe(part: _Part, default_charset: str) -> None:
    """Read a part's name, file name and charset; AmbiguousBody where readers differ."""
    seen: dict[bytes, bytes] = {}
    for name, value in part.headers:
        key = name.strip().lower()
        if key in _STRUCTURAL and key in seen:
            raise AmbiguousBody(f"multipart part with two {name.decode('latin-1')} headers")
        seen[key] = value
    disposition = seen.get(b"content-disposition", b"").decode("latin-1")
    if not disposition:
        raise AmbiguousBody("multipart part without Content-Disposition")
    # python-multipart ignores RFC 2231 `name*=` (RFC 7578 forbids it); a provider may
    # not. Either reading could be the wrong one: refuse.
    if _EXTENDED_PARAM.search(disposition) or len(_NAME_PARAM.findall(disposition)) > 1:
        raise AmbiguousBody("multipart part with an extended (name*=) or repeated parameter")
    encoding = seen.get(b"content-transfer-encoding", b"binary").strip().lower().decode("latin-1")
    if encoding not in _PART_ENCODINGS:
        raise AmbiguousBody(f"multipart part in {encoding} transfer encoding")
    _, options = parse_options_header(disposition)
    part.name = options.get(b"name", b"").decode("utf-8", "surrogateescape")
    part.filename = options.get(b"filename")
    _, type_params = content_type_params(seen.get(b"content-type", b"").decode("latin-1") or None)
    part.charset = _charset(type_params, default_charset)


class MultipartBody:
    """multipart/form-data: text fields by name; files follow the attachments rule.

    Parsed by python-multipart and written back from what it parsed: preamble and
    epilogue (which no field reader sees, but which could carry anything) never leave.
    Part headers other than the structural ones are scanned like fields."""

    def __init__(self, body: bytes, params: dict[str, str], selector: FieldSelector) -> None:
        boundary = params.get("boundary")
        if not boundary:
            first = body.split(b"\n", 1)[0].strip()
            if not first.startswith(b"--"):
                raise UnparsableBody("multipart body without a boundary")
            boundary = first[2:].decode("latin-1")
        self.body = body
        self.boundary = boundary.encode("latin-1")
        self.selector = selector
        self.charset = _charset(params)
        self.parts = _read_parts(body, self.boundary)
        for part in self.parts:
            _describe(part, self.charset)

    def _text(self, part: _Part) -> str:
        return bytes(part.content).decode(part.charset, "surrogateescape")

    def names(self) -> list[str]:
        fields = [p for p in self.parts if p.filename is None]
        named = [self._text(p) for p in fields if self.selector.holds_name(p.name)]
        return named + display_names(
            self._text(p) for p in fields if self.selector.is_destination(p.name))

    def texts(self) -> Iterator[tuple[str, str]]:
        for part in self.parts:
            for name, value in part.headers:
                if name.strip().lower() not in _STRUCTURAL:
                    yield f"header:{part.name}", value.decode("utf-8", "surrogateescape")
            if part.filename is None and self.selector.redacts(part.name):
                yield f"{self.selector.kind(part.name)}:{part.name}", self._text(part)

    def rewrite(self, rewrite: Rewrite, attachments: AttachmentRule) -> Rewritten:
        findings: list[Finding] = []
        out: list[bytes] = []
        for index, part in enumerate(self.parts, start=1):
            content = bytes(part.content)
            if part.filename is not None and attachments != "keep":
                findings.append(Finding("attachment", 0, 0, attachments, f"part:{index}"))
                if attachments == "drop":
                    continue
            headers: list[bytes] = []
            for name, value in part.headers:
                if name.strip().lower() not in _STRUCTURAL:
                    text = value.decode("utf-8", "surrogateescape")
                    new, found = rewrite(f"header:{part.name}", text)
                    findings.extend(found)
                    if drops_field(found):
                        continue
                    value = new.encode("utf-8", "surrogateescape")
                headers.append(name + b": " + value + b"\r\n")
            if part.filename is None and self.selector.redacts(part.name):
                text = self._text(part)
                new, found = rewrite(f"{self.selector.kind(part.name)}:{part.name}", text)
                findings.extend(found)
                if drops_field(found):
                    continue
                content = new.encode(part.charset, "surrogateescape")
            out.append(b"--" + self.boundary + b"\r\n" + b"".join(headers) + b"\r\n" + content + b"\r\n")
        return Rewritten(b"".join(out) + b"--" + self.boundary + b"--\r\n", findings)


def _format_of(mime_type: str, body: bytes) -> str:
    """The format of a body sent to an `auto` channel (an API taking several)."""
    if mime_type == "application/json" or mime_type.endswith("+json"):
        return "json"
    if mime_type == "application/x-www-form-urlencoded":
        return "form"
    if mime_type == "multipart/form-data":
        return "multipart"
    return "json" if body.lstrip()[:1] in (b"{", b"[") else "form"


def parse_query(query: bytes, channel: ChannelRule) -> BodyDocument:
    """A request's query string, read as a form whatever the body's format: a form
    channel's fields apply to it, other channels have every parameter scanned (their
    field paths name places in the body), the recipient's excepted."""
    fields = channel.fields if channel.format in ("form", "auto") else []
    return FormBody(query, {}, FieldSelector.for_channel(channel, fields), query=True)


def parse_body(body: bytes, content_type: str | None, channel: ChannelRule) -> BodyDocument:
    """The body as the channel's format; a body that is not in that format is text."""
    mime_type, params = content_type_params(content_type)
    selector = FieldSelector.for_channel(channel)
    format = channel.format if channel.format != "auto" else _format_of(mime_type, body)
    try:
        match format:
            case "form":
                return FormBody(body, params, selector)
            case "json":
                return JsonBody(body, selector)
            case "multipart":
                return MultipartBody(body, params, selector)
    except UnparsableBody:
        pass  # still redact it: as text, nothing is skipped
    return TextBody(body, params)
