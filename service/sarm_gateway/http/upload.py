"""A multipart/form-data upload streamed to a temp file as it arrives, within its limits, removed in every case.

Starlette's own form parsing spools the whole body before a route runs; parsing here lets the size limit (413),
an unknown or repeated field (422) and a stalled client (408) stop the upload at the chunk that crosses the line.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from fastapi import HTTPException, Request
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

FILE_FIELD = "video"
MAX_FIELD_BYTES = 64 * 1024  # each text field; an instruction is at most SARM_MAX_INSTRUCTION_CHARS anyway
# The joint state, as JSON rows: a few hundred bytes a frame for the longest videos the limits let through.
FIELD_LIMITS = {"state": 16 * 1024 * 1024}


@dataclass
class Upload:
    video: Path
    fields: dict[str, str]


@dataclass
class _Parts:
    """python-multipart callbacks: the file part's bytes go to `pending` (written by the caller, off the loop),
    the other known fields to memory."""

    names: Collection[str]
    pending: list[bytes] = field(default_factory=list)
    fields: dict[str, bytearray] = field(default_factory=dict)
    seen_file: bool = False
    ended: bool = False
    _header: bytes = b""
    _value: bytes = b""
    _name: str | None = None
    _target: bytearray | None = None  # None: the file part

    def on_part_begin(self) -> None:
        self._name = None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        if self._header.lower() == b"content-disposition":
            _, options = parse_options_header(self._value)
            if b"name" in options:
                self._name = options[b"name"].decode("utf-8", "replace")
        self._header, self._value = b"", b""

    def on_headers_finished(self) -> None:
        name = self._name
        if name is None:
            raise HTTPException(400, "a multipart part has no Content-Disposition name")
        if name == FILE_FIELD:
            if self.seen_file:
                raise HTTPException(422, f"the '{FILE_FIELD}' field is sent twice: send one video per request")
            self.seen_file, self._target = True, None
            return
        if name not in self.names:
            raise HTTPException(
                422, f"unknown form field '{name}'; the fields are {', '.join([FILE_FIELD, *sorted(self.names)])}"
            )
        if name in self.fields:
            raise HTTPException(422, f"form field '{name}' is sent twice")
        self._target = self.fields[name] = bytearray()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._target is None:
            self.pending.append(bytes(data[start:end]))
            return
        self._target += data[start:end]
        limit = FIELD_LIMITS.get(self._name or "", MAX_FIELD_BYTES)
        if len(self._target) > limit:
            raise HTTPException(413, f"form field '{self._name}' is over {limit} bytes")

    def on_end(self) -> None:
        self.ended = True


async def _receive(
    request: Request, parser: MultipartParser, parts: _Parts, file: BinaryIO, max_bytes: int, timeout_s: float
) -> None:
    received = 0
    chunks = request.stream().__aiter__()
    while True:
        try:
            async with asyncio.timeout(timeout_s):
                chunk = await anext(chunks)
        except StopAsyncIteration:
            break
        except TimeoutError as error:
            raise HTTPException(408, f"no upload data for {timeout_s:g} s (SARM_UPLOAD_TIMEOUT_S)") from error
        except ClientDisconnect as error:
            raise HTTPException(400, "the client disconnected during the upload") from error
        received += len(chunk)
        if received > max_bytes:
            raise HTTPException(413, f"the upload is over {max_bytes} bytes (SARM_MAX_UPLOAD_BYTES)")
        try:
            parser.write(chunk)
        except MultipartParseError as error:
            raise HTTPException(400, f"malformed multipart body: {error}") from error
        if parts.pending:
            data, parts.pending = parts.pending, []
            await asyncio.to_thread(file.writelines, data)  # a slow disk must not stall the event loop
    parser.finalize()
    if not parts.ended:
        raise HTTPException(400, "the multipart body ended before its closing boundary: the upload was cut short")
    if not parts.seen_file:
        raise HTTPException(422, f"no '{FILE_FIELD}' field: send the video as a file field named '{FILE_FIELD}'")


@asynccontextmanager
async def receive_upload(
    request: Request, field_names: Collection[str], max_bytes: int, timeout_s: float, directory: Path | None
) -> AsyncIterator[Upload]:
    """The request's video in a temp file (removed on exit, whatever happened) and its other fields."""
    content_type, options = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data" or not options.get(b"boundary"):
        raise HTTPException(415, f"send multipart/form-data with the video in a file field named '{FILE_FIELD}'")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:  # refused before a byte is read
        raise HTTPException(413, f"the upload is {length} bytes; the limit is {max_bytes} (SARM_MAX_UPLOAD_BYTES)")
    parts = _Parts(field_names)
    parser = MultipartParser(
        options[b"boundary"],
        callbacks={
            "on_part_begin": parts.on_part_begin,
            "on_header_field": parts.on_header_field,
            "on_header_value": parts.on_header_value,
            "on_header_end": parts.on_header_end,
            "on_headers_finished": parts.on_headers_finished,
            "on_part_data": parts.on_part_data,
            "on_end": parts.on_end,
        },
    )
    handle, name = tempfile.mkstemp(prefix="sarm-upload-", dir=directory)
    path = Path(name)
    try:
        with os.fdopen(handle, "wb") as file:
            await _receive(request, parser, parts, file, max_bytes, timeout_s)
        fields = {}
        for key, value in parts.fields.items():
            try:
                fields[key] = value.decode()
            except UnicodeDecodeError as error:
                raise HTTPException(422, f"form field '{key}' is not UTF-8 text") from error
        yield Upload(path, fields)
    finally:
        path.unlink(missing_ok=True)
