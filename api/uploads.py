"""Streaming multipart intake: the file part goes straight to storage (hashed, size-limited) as it arrives;
the upload is never held in memory and a too-large body is refused as soon as it passes the limit. A body
that stalls, or takes too long as a whole, is refused with 408 (``body_chunks``), and a user's uploads are
admitted a few at a time (``upload_slot``) before any of the body is read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from fastapi import Request
from python_multipart.multipart import MultipartParser, parse_options_header

from api.errors import ApiError
from services.auth import Principal
from services.storage import Storage, StorageFull, StoredUpload, TooLarge, UploadWriter
from services.upload_limits import UploadLimiter

MAX_FIELD_BYTES = 64 * 1024
MAX_FIELDS = 32
MULTIPART_OVERHEAD = 64 * 1024

ADAPTER_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar")
DATASET_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


def too_large(limit: int) -> ApiError:
    return ApiError(413, "too_large", f"the upload is larger than the limit of {limit} bytes ({limit / 2**20:.0f} MiB)")


@contextmanager
def upload_slot(limiter: UploadLimiter, principal: Principal) -> Iterator[None]:
    """One of the caller's upload slots for the duration of the block, or 429 with Retry-After at once (no
    byte of the body read). The slot is given back however the block ends."""
    refusal = limiter.try_acquire(principal.user_id)
    if refusal is not None:
        # Connection: close, as for a body timeout: the body is not read, and on a kept connection the client
        # would go on sending all of it (up to max_upload_bytes) for nothing.
        raise ApiError(429, "too_many_requests", refusal.reason,
                       headers={"Retry-After": str(refusal.retry_after), "Connection": "close"})
    try:
        yield
    finally:
        limiter.release(principal.user_id)


def body_timeout(message: str) -> ApiError:
    # The rest of the body will not be read: the connection must not be reused for another request.
    return ApiError(408, "request_timeout", message, headers={"Connection": "close"})


async def body_chunks(request: Request, idle_seconds: float, max_seconds: float) -> AsyncIterator[bytes]:
    """The request body as it arrives; 408 when no byte comes for ``idle_seconds`` or the whole body takes
    longer than ``max_seconds``. Without it a client that stopped sending held its request open forever."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_seconds
    chunks = request.stream().__aiter__()
    while True:
        left = deadline - loop.time()
        try:
            async with asyncio.timeout(max(0.0, min(idle_seconds, left))):
                chunk = await anext(chunks)
        except StopAsyncIteration:
            return
        except TimeoutError:
            if left <= idle_seconds:
                raise body_timeout(f"the upload took longer than {max_seconds:g} s; send it faster or smaller") from None
            raise body_timeout(f"no data received for {idle_seconds:g} s; the upload was discarded") from None
        yield chunk


@dataclass
class ParsedForm:
    fields: dict[str, str] = field(default_factory=dict)
    upload: StoredUpload | None = None


async def parse_multipart(
    request: Request, storage: Storage, limit: int, file_field: str = "file", *,
    idle_seconds: float = 30.0, max_seconds: float = 900.0,
) -> ParsedForm:
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or not params.get(b"boundary"):
        raise ApiError(415, "unsupported_media_type", "send the upload as multipart/form-data with a 'file' part")
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit + MULTIPART_OVERHEAD:
        raise too_large(limit)

    form = ParsedForm()
    st: dict = {"headers": {}, "hname": b"", "hval": b"", "name": None, "writer": None, "buf": None}

    def on_part_begin():
        st.update(headers={}, hname=b"", hval=b"", name=None, writer=None, buf=None)

    def on_header_field(data, start, end):
        st["hname"] += data[start:end]

    def on_header_value(data, start, end):
        st["hval"] += data[start:end]

    def on_header_end():
        st["headers"][st["hname"].decode("latin-1").lower()] = st["hval"]
        st["hname"], st["hval"] = b"", b""

    def on_headers_finished():
        _, disp = parse_options_header(st["headers"].get("content-disposition", b""))
        name = disp.get(b"name", b"").decode("utf-8", "replace")
        filename = disp.get(b"filename")
        st["name"] = name
        if name == file_field:
            if form.upload is not None or st.get("had_file"):
                raise ApiError(422, "invalid_input", "send exactly one file", field=file_field)
            st["had_file"] = True
            st["writer"] = UploadWriter(storage, filename.decode("utf-8", "replace") if filename else None, limit)
        else:
            if len(form.fields) >= MAX_FIELDS:
                raise ApiError(422, "invalid_input", "too many form fields")
            st["buf"] = bytearray()

    def on_part_data(data, start, end):
        if st["writer"] is not None:
            st["writer"].write(data[start:end])
        elif st["buf"] is not None:
            st["buf"] += data[start:end]
            if len(st["buf"]) > MAX_FIELD_BYTES:
                raise ApiError(422, "invalid_input", f"form field {st['name']!r} is too long", field=st["name"])

    def on_part_end():
        if st["writer"] is not None:
            form.upload = st["writer"].close()
            st["writer"] = None
        elif st["buf"] is not None and st["name"]:
            form.fields[st["name"]] = bytes(st["buf"]).decode("utf-8", "replace")

    parser = MultipartParser(
        params[b"boundary"],
        callbacks={
            "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
            "on_header_end": on_header_end, "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data, "on_part_end": on_part_end,
        },
    )
    try:
        async for chunk in body_chunks(request, idle_seconds, max_seconds):
            parser.write(chunk)
        parser.finalize()
    except TooLarge as e:
        storage.discard(form.upload)
        raise too_large(e.limit) from None
    except StorageFull as e:
        if st.get("writer") is not None:
            st["writer"].abort()
        storage.discard(form.upload)
        raise ApiError(507, "insufficient_storage", f"{e}; nothing was stored, try again later") from None
    except ApiError:
        if st.get("writer") is not None:
            st["writer"].abort()
        storage.discard(form.upload)
        raise
    except Exception as e:
        if st.get("writer") is not None:
            st["writer"].abort()
        storage.discard(form.upload)
        raise ApiError(400, "bad_request", f"malformed multipart body: {e}") from None
    if st.get("writer") is not None:  # body ended inside the file part
        st["writer"].abort()
        raise ApiError(400, "bad_request", "the multipart body ended before the file was complete")
    return form


def infer_kind(filename: str) -> str | None:
    low = filename.lower()
    if low.endswith(ADAPTER_SUFFIXES):
        return "adapter"
    if low.endswith(DATASET_SUFFIXES):
        return "dataset"
    return None


def check_type(kind: str, upload: StoredUpload) -> None:
    """415 unless the file's name and first bytes fit the kind (an archive for an adapter; JSONL/JSON/CSV
    text or Parquet for a dataset). The worker's inspection checks the content in depth."""
    name, head = upload.filename.lower(), upload.head
    if kind == "adapter":
        ok = (
            (name.endswith(".zip") and head.startswith(b"PK\x03\x04"))
            or (name.endswith((".tar.gz", ".tgz")) and head.startswith(b"\x1f\x8b"))
            or (name.endswith(".tar") and len(head) >= 262 and head[257:262] == b"ustar")
        )
        if not ok:
            raise ApiError(
                415, "unsupported_media_type",
                f"{upload.filename}: an adapter is a .zip, .tar.gz or .tar of a PEFT directory "
                "(adapter_config.json + adapter_model.safetensors)",
            )
        return
    if name.endswith(".parquet"):
        ok = head.startswith(b"PAR1")
    elif name.endswith((".jsonl", ".json", ".csv")):
        ok = b"\x00" not in head and _is_text(head)
    else:
        ok = False
    if not ok:
        raise ApiError(
            415, "unsupported_media_type",
            f"{upload.filename}: a dataset is a .jsonl, .json, .csv (UTF-8 text) or .parquet file",
        )


def _is_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
        return True
    except UnicodeDecodeError as e:  # a multibyte character cut at the end of the head is fine
        return e.start >= len(head) - 4
