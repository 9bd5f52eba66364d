"""HTTP request bodies sent to SMS and e-mail provider APIs: form, JSON, multipart, text.

Unchanged fields keep their exact bytes (a provider signature over the body, or its
parser's quirks, are not disturbed by fields nobody touched). A field whose finding
says `drop` is removed from the body.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from email.message import Message
from typing import Any, Literal, Protocol
from urllib.parse import quote_plus, unquote_to_bytes

from gateway.redact.formats.base import Rewrite, Rewritten, UnparsableBody, drops_field
from gateway.redact.formats.fields import FieldSelector
from gateway.redact.outcome import Finding
from gateway.redact.policy import ChannelRule

AttachmentRule = Literal["keep", "drop", "block"]


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

    def __init__(self, body: bytes, params: dict[str, str], selector: FieldSelector) -> None:
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
        if not any(v is not None for _, _, v in self.pairs) or any(
            _NOT_A_KEY.search(k) for _, k, _ in self.pairs
        ):
            raise UnparsableBody("not a form body")  # e.g. a text body sent as form

    def _unquote(self, raw: bytes) -> str:
        return unquote_to_bytes(raw.replace(b"+", b" ")).decode(self.charset, "surrogateescape")

    def names(self) -> list[str]:
        return [v for _, k, v in self.pairs if v and self.selector.holds_name(k)]

    def texts(self) -> Iterator[tuple[str, str]]:
        for _, key, value in self.pairs:
            if value is not None and self.selector.redacts(key):
                yield f"field:{key}", value

    def rewrite(self, rewrite: Rewrite, attachments: AttachmentRule) -> Rewritten:
        findings: list[Finding] = []
        out: list[bytes] = []
        changed = False
        for raw, key, value in self.pairs:
            if value is None or not self.selector.redacts(key):
                out.append(raw)
                continue
            new, found = rewrite(f"field:{key}", value)
            findings.extend(found)
            if drops_field(found):
                changed = True
                continue
            if new == value:
                out.append(raw)
                continue
            changed = True
            encoded = quote_plus(new, encoding=self.charset, errors="surrogateescape")
            out.append(raw.partition(b"=")[0] + b"=" + encoded.encode("ascii"))
        return Rewritten(b"&".join(out) if changed else self.body, findings)


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
            self.data = json.loads(body.decode("utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UnparsableBody(f"not JSON: {exc}") from None
        self.pretty = re.search(rb'"\s*:\s', body) is not None

    def names(self) -> list[str]:
        return [str(c[k]) for p, c, k in _json_leaves(self.data, "") if self.selector.holds_name(p)]

    def texts(self) -> Iterator[tuple[str, str]]:
        for path, container, key in _json_leaves(self.data, ""):
            if self.selector.redacts(path):
                yield f"field:{path}", str(container[key])

    def rewrite(self, rewrite: Rewrite, attachments: AttachmentRule) -> Rewritten:
        findings: list[Finding] = []
        dropped: list[tuple[Any, Any]] = []
        changed = False
        for path, container, key in list(_json_leaves(self.data, "")):
            if not self.selector.redacts(path):
                continue
            value = container[key]
            text = value if isinstance(value, str) else json.dumps(value)
            new, found = rewrite(f"field:{path}", text)
            findings.extend(found)
            if drops_field(found):
                dropped.append((container, key))
            elif new != text:
                container[key] = new
            changed |= new != text or drops_field(found)
        for container, key in reversed(dropped):
            del container[key]
        if not changed:
            return Rewritten(self.body, findings)
        separators = (", ", ": ") if self.pretty else (",", ":")
        text = json.dumps(self.data, ensure_ascii=False, separators=separators)
        return Rewritten(text.encode("utf-8", "surrogateescape"), findings)


_HEADER_END = re.compile(rb"\r?\n\r?\n")


class MultipartBody:
    """multipart/form-data: text fields by name; files follow the attachments rule."""

    def __init__(self, body: bytes, params: dict[str, str], selector: FieldSelector) -> None:
        boundary = params.get("boundary")
        if not boundary:
            first = body.split(b"\n", 1)[0].strip()
            if not first.startswith(b"--"):
                raise UnparsableBody("multipart body without a boundary")
            boundary = first[2:].decode("latin-1")
        self.body = body
        self.delimiter = b"--" + boundary.encode("latin-1")
        self.selector = selector
        self.charset = _charset(params)
        self.segments = body.split(self.delimiter)
        # Anything this parser would skip (a part without headers, content after a
        # missing closing delimiter) must not go unscanned: then it is text.
        if len(self.segments) < 3 or not self.segments[-1].startswith(b"--"):
            raise UnparsableBody("multipart body without parts or closing delimiter")
        if any(_HEADER_END.search(s) is None for s in self.segments[1:-1]):
            raise UnparsableBody("multipart part without headers")

    def _parts(self) -> Iterator[tuple[int, Message, bytes, bytes, bytes]]:
        """(segment index, headers, head bytes, content, tail) for each part."""
        for index in range(1, len(self.segments) - 1):
            segment = self.segments[index]
            split = _HEADER_END.search(segment)
            assert split is not None  # checked in __init__
            head, content = segment[: split.end()], segment[split.end() :]
            tail = b"\r\n" if content.endswith(b"\r\n") else b"\n" if content.endswith(b"\n") else b""
            content = content[: len(content) - len(tail)]
            headers = Message()
            for line in head.decode("latin-1").splitlines():
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip()] = value.strip()
            yield index, headers, head, content, tail

    def _text_fields(self) -> Iterator[tuple[int, str, str, str, bytes, bytes]]:
        for index, headers, head, content, tail in self._parts():
            name = headers.get_param("name", header="content-disposition")
            if headers.get_param("filename", header="content-disposition") is not None:
                continue
            charset = _charset({"charset": headers.get_content_charset() or self.charset})
            yield index, str(name or ""), content.decode(charset, "surrogateescape"), charset, head, tail

    def names(self) -> list[str]:
        return [text for _, name, text, *_ in self._text_fields() if self.selector.holds_name(name)]

    def texts(self) -> Iterator[tuple[str, str]]:
        for _, name, text, *_ in self._text_fields():
            if self.selector.redacts(name):
                yield f"field:{name}", text

    def rewrite(self, rewrite: Rewrite, attachments: AttachmentRule) -> Rewritten:
        findings: list[Finding] = []
        segments = list(self.segments)
        removed: set[int] = set()
        if attachments != "keep":
            for index, headers, *_ in self._parts():
                filename = headers.get_param("filename", header="content-disposition")
                if filename is not None:
                    findings.append(Finding("attachment", 0, 0, attachments, f"part:{index}"))
                    if attachments == "drop":
                        removed.add(index)
        for index, name, text, charset, head, tail in self._text_fields():
            if not self.selector.redacts(name):
                continue
            new, found = rewrite(f"field:{name}", text)
            findings.extend(found)
            if drops_field(found):
                removed.add(index)
            elif new != text:
                segments[index] = head + new.encode(charset, "surrogateescape") + tail
        if not removed and segments == self.segments:
            return Rewritten(self.body, findings)
        kept = [s for i, s in enumerate(segments) if i not in removed]
        return Rewritten(self.delimiter.join(kept), findings)


def parse_body(body: bytes, content_type: str | None, channel: ChannelRule) -> BodyDocument:
    """The body as the channel's format; a body that is not in that format is text."""
    _, params = content_type_params(content_type)
    selector = FieldSelector(channel.fields, channel.recipient_field, channel.name_fields)
    try:
        match channel.format:
            case "form":
                return FormBody(body, params, selector)
            case "json":
                return JsonBody(body, selector)
            case "multipart":
                return MultipartBody(body, params, selector)
    except UnparsableBody:
        pass  # still redact it: as text, nothing is skipped
    return TextBody(body, params)
