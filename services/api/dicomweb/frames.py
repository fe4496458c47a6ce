"""WADO-RS frames (PS3.18 10.4.1.1.3): /studies/{s}/series/{r}/instances/{i}/frames/{list}.

Native pixel data: each frame's bytes, little endian (big endian objects are swapped), application/octet-stream.
Encapsulated pixel data: each frame as stored with its media type (image/jpeg, image/jls, image/jp2, ...), or
as application/octet-stream with its transfer-syntax when the client takes any syntax, or decoded (the
pylibjpeg/openjpeg/JPEG-LS/RLE decoders) when only uncompressed bytes are acceptable. The object is read whole
into memory for this request (frames are asked for one instance at a time).
"""

from __future__ import annotations

import logging
from io import BytesIO

import numpy as np
import pydicom
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response, StreamingResponse
from pydicom.encaps import get_frame
from pydicom.pixels import pixel_array
from sqlalchemy.orm import Session

from services.api.dependencies import get_runtime, get_session
from services.api.dicomweb.multipart import Part, new_boundary, parse_accept, write_multipart
from services.api.dicomweb.negotiation import FramePlan, NotAcceptable, plan_frames
from services.api.dicomweb.wado import select_items, stored_chunks
from shared.runtime import Runtime
from shared.storage import StorageError

log = logging.getLogger(__name__)
router = APIRouter(tags=["dicomweb"])
MAX_FRAMES_PER_REQUEST = 10_000


def frame_numbers(text: str) -> list[int]:
    try:
        numbers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise HTTPException(400, "frame list: comma-separated frame numbers (1 is the first)") from exc
    if not numbers or min(numbers) < 1 or len(numbers) > MAX_FRAMES_PER_REQUEST:
        raise HTTPException(400, "frame list: comma-separated frame numbers (1 is the first)")
    return numbers


def _native_frame(dataset: pydicom.Dataset, index: int) -> bytes:
    rows, columns = int(dataset.Rows), int(dataset.Columns)
    samples, bits = int(dataset.get("SamplesPerPixel", 1) or 1), int(dataset.BitsAllocated)
    pixels = rows * columns * samples
    data: bytes = dataset.PixelData
    if bits == 1:  # bit-packed frames need not start on a byte boundary
        start_bit = index * pixels
        bits_array = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
        return np.packbits(bits_array[start_bit:start_bit + pixels], bitorder="little").tobytes()
    size = pixels * bits // 8
    frame = data[index * size:(index + 1) * size]
    if not dataset.file_meta.TransferSyntaxUID.is_little_endian and bits > 8:
        frame = np.frombuffer(frame, dtype=f">u{bits // 8}").astype(f"<u{bits // 8}").tobytes()
    return frame


def _decoded_frame(encoded: bytes, index: int) -> bytes:
    array = pixel_array(BytesIO(encoded), index=index)
    return np.ascontiguousarray(array.astype(array.dtype.newbyteorder("<"))).tobytes()


def extract_frames(encoded: bytes, numbers: list[int], accept_header: str | None) -> tuple[FramePlan, list[bytes]]:
    """The plan (what is sent) and the frames' bytes; HTTPException for what cannot be served."""
    dataset = pydicom.dcmread(BytesIO(encoded))
    if "PixelData" not in dataset:
        raise HTTPException(404, "the instance has no pixel data (no frames)")
    syntax = dataset.file_meta.TransferSyntaxUID
    try:
        plan = plan_frames(parse_accept(accept_header), str(syntax))
    except NotAcceptable as exc:
        raise HTTPException(406, str(exc)) from exc
    count = int(dataset.get("NumberOfFrames", 1) or 1)
    if max(numbers) > count:
        raise HTTPException(404, f"the instance has {count} frame(s)")
    frames = []
    for number in numbers:
        if plan.decode:
            try:
                frames.append(_decoded_frame(encoded, number - 1))
            except Exception as exc:
                log.warning("wado.frame_decode_failed error=%s", exc.__class__.__name__)
                raise HTTPException(406, "the stored frames cannot be decoded to uncompressed bytes") from exc
        elif syntax.is_encapsulated:
            frames.append(get_frame(dataset.PixelData, number - 1, number_of_frames=count))
        else:
            frames.append(_native_frame(dataset, number - 1))
    return plan, frames


@router.get("/dicomweb/studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
            summary="WADO-RS: frames of an instance")
def retrieve_frames(study: str, series: str, instance: str, frames: str, request: Request,
                    runtime: Runtime = Depends(get_runtime), session: Session = Depends(get_session)) -> Response:
    numbers = frame_numbers(frames)
    [item] = select_items(session, study, series, instance)
    try:
        encoded = b"".join(stored_chunks(runtime.store, item.object_key))
    except StorageError as exc:
        raise HTTPException(503, "object store unavailable") from exc
    plan, payloads = extract_frames(encoded, numbers, request.headers.get("accept"))
    boundary = new_boundary()
    part_type = plan.content_type.split(";")[0]
    parts = (Part(plan.content_type, [payload]) for payload in payloads)
    media_type = f'multipart/related; type="{part_type}"; boundary={boundary}'
    return StreamingResponse(write_multipart(parts, boundary), media_type=media_type)
