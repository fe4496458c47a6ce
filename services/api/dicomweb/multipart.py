"""multipart/related (RFC 2387) for DICOMweb: media types, Accept headers, writing and reading bodies.

Written bodies are generators (parts are streamed as they are read from the object store). Read bodies are
spooled to a file first and their parts located in it, so one part at a time is held in memory.
"""

from __future__ import annotations

import mmap
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

CRLF = b"\r\n"


@dataclass(frozen=True)
class MediaType:
    """A media type (or range) with its parameters (lower-case names, unquoted values) and its q-value."""

    type: str  # e.g. multipart/related, application/dicom, */*
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0

    def matches(self, concrete: str) -> bool:
        """Whether this (possibly wildcard) range covers the concrete media type."""
        major, _, minor = self.type.partition("/")
        c_major, _, c_minor = concrete.lower().partition("/")
        return (major == "*" or major == c_major) and (minor == "*" or minor == c_minor)


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    parts, current, quoted = [], [], False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def parse_media_type(text: str) -> MediaType:
    pieces = [piece.strip() for piece in _split_outside_quotes(text, ";")]
    params: dict[str, str] = {}
    q = 1.0
    for piece in pieces[1:]:
        name, _, value = piece.partition("=")
        name, value = name.strip().lower(), value.strip().strip('"')
        if name == "q":
            try:
                q = float(value)
            except ValueError:
                q = 0.0
        elif name:
            params[name] = value
    return MediaType(pieces[0].lower() or "*/*", params, q)


def parse_accept(header: str | None) -> list[MediaType]:
    """The acceptable media types, best first (an absent or empty Accept accepts anything)."""
    if not header or not header.strip():
        return [MediaType("*/*")]
    ranges = [parse_media_type(item) for item in _split_outside_quotes(header, ",") if item.strip()]
    return sorted((media for media in ranges if media.q > 0), key=lambda media: -media.q)


def new_boundary() -> str:
    return uuid.uuid4().hex


def multipart_content_type(part_type: str, boundary: str, transfer_syntax: str | None = None) -> str:
    value = f'multipart/related; type="{part_type}"; boundary={boundary}'
    return value + (f"; transfer-syntax={transfer_syntax}" if transfer_syntax else "")


@dataclass
class Part:
    content_type: str
    chunks: Iterable[bytes]
    location: str | None = None


def write_multipart(parts: Iterable[Part], boundary: str) -> Iterator[bytes]:
    """The body: each part's headers then its chunks, as they come; the closing delimiter at the end."""
    marker = f"--{boundary}".encode()
    for part in parts:
        headers = f"Content-Type: {part.content_type}\r\n"
        if part.location:
            headers += f"Content-Location: {part.location}\r\n"
        yield marker + CRLF + headers.encode() + CRLF
        yield from part.chunks
        yield CRLF
    yield marker + b"--" + CRLF


class MalformedMultipart(ValueError):
    """The request body is not the multipart/related it claims to be."""


@dataclass(frozen=True)
class ReceivedPart:
    headers: dict[str, str]  # lower-case names
    start: int  # offset of the body in the spooled request
    end: int

    @property
    def content_type(self) -> MediaType:
        return parse_media_type(self.headers.get("content-type", ""))


def locate_parts(body: mmap.mmap | bytes, boundary: str) -> list[ReceivedPart]:
    """Every part of a multipart body: its headers and where its content lies (nothing is copied)."""
    delimiter = f"--{boundary}".encode()
    position = body.find(delimiter)
    if position < 0:
        raise MalformedMultipart("no boundary delimiter in the body")
    parts: list[ReceivedPart] = []
    while True:
        position += len(delimiter)
        if body[position:position + 2] == b"--":
            return parts  # the close delimiter
        line_end = body.find(CRLF, position)
        if line_end < 0:
            raise MalformedMultipart("a part without headers")
        headers_end = body.find(CRLF + CRLF, line_end)
        if headers_end < 0:
            raise MalformedMultipart("a part without the blank line after its headers")
        headers = _headers(bytes(body[line_end + 2:headers_end]))
        start = headers_end + 4
        next_delimiter = body.find(CRLF + delimiter, start)
        if next_delimiter < 0:
            raise MalformedMultipart("the body ends inside a part (no close delimiter)")
        parts.append(ReceivedPart(headers, start, next_delimiter))
        position = next_delimiter + 2


def _headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.split(CRLF):
        if not line.strip():
            continue
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise MalformedMultipart("a part header line without a colon")
        headers[name.strip().lower()] = value.strip()
    return headers
