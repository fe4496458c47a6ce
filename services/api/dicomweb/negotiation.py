"""Accept-header negotiation of WADO-RS (PS3.18 8.7): what to send for instances and for frames, or 406.

Instances: ``multipart/related; type="application/dicom"`` (the default, and what ``*/*`` gets). Without a
``transfer-syntax`` parameter, or with ``*``, every instance is sent as stored (its Part-10 bytes unchanged);
with explicit syntaxes, an instance stored in one of them is sent as stored, otherwise it is decoded to Explicit
VR Little Endian when that is acceptable, else 406. A bare ``application/dicom`` gets the single instance
non-encapsulated.

Frames: the stored (compressed) frame with its own media type, or as ``application/octet-stream`` with its
``transfer-syntax`` when the client takes any syntax (``transfer-syntax=*``: what OHIF asks); decoded to native
little-endian bytes when only uncompressed ``application/octet-stream`` is acceptable.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.uid import UID, ExplicitVRLittleEndian

from services.api.dicomweb.multipart import MediaType

DICOM = "application/dicom"
OCTET_STREAM = "application/octet-stream"
FRAME_MEDIA_TYPES = {
    "1.2.840.10008.1.2.5": "image/dicom-rle",
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
}


class NotAcceptable(Exception):
    """No representation the node can send is acceptable to the client (406)."""


def require_json(accept: list[MediaType]) -> None:
    """QIDO-RS answers and metadata are DICOM JSON (application/dicom+json, or application/json); no XML."""
    if not any(media.matches("application/dicom+json") or media.matches("application/json") for media in accept):
        raise NotAcceptable("acceptable: application/dicom+json")


@dataclass(frozen=True)
class InstancePlan:
    multipart: bool
    syntaxes: frozenset[str] | None  # None: as stored, whatever the syntax

    def sends_as_stored(self, stored_syntax: str) -> bool:
        return self.syntaxes is None or stored_syntax in self.syntaxes

    def can_send(self, stored_syntax: str) -> bool:
        return self.sends_as_stored(stored_syntax) or ExplicitVRLittleEndian in (self.syntaxes or ())


def _part_type(media: MediaType, default: str) -> str | None:
    """The part media type a multipart range asks for (None when the range is no multipart/related one)."""
    if media.type in ("*/*", "multipart/*"):
        return media.params.get("type", "*/*")
    if media.type == "multipart/related":
        return media.params.get("type", default)
    return None


def plan_instances(accept: list[MediaType], single_instance: bool) -> InstancePlan:
    syntaxes: set[str] = set()
    any_syntax = False
    multipart_ok = False
    bare_ok = False
    for media in accept:
        part = _part_type(media, DICOM)
        if part is not None and MediaType(part.lower()).matches(DICOM):
            multipart_ok = True
            wanted = media.params.get("transfer-syntax")
            if wanted in (None, "", "*"):
                any_syntax = True
            else:
                syntaxes.add(wanted)
        elif media.type == DICOM and single_instance:
            bare_ok = True
            wanted = media.params.get("transfer-syntax")
            any_syntax = any_syntax or wanted in (None, "", "*")
            if wanted not in (None, "", "*"):
                syntaxes.add(str(wanted))
    if not multipart_ok and not bare_ok:
        raise NotAcceptable("acceptable: multipart/related; type=\"application/dicom\"")
    return InstancePlan(multipart=multipart_ok, syntaxes=None if any_syntax else frozenset(syntaxes))


@dataclass(frozen=True)
class FramePlan:
    decode: bool  # decode to native little-endian bytes
    content_type: str  # of each part


def plan_frames(accept: list[MediaType], stored_syntax: str) -> FramePlan:
    syntax = UID(stored_syntax)
    native = not syntax.is_encapsulated
    own_type = OCTET_STREAM if native else FRAME_MEDIA_TYPES.get(stored_syntax, OCTET_STREAM)
    label = ExplicitVRLittleEndian if native else stored_syntax
    for media in accept:
        part = _part_type(media, OCTET_STREAM)
        if part is None:
            continue
        part_range = MediaType(part.lower())
        wanted = media.params.get("transfer-syntax")
        if part_range.matches(own_type) and wanted in (None, "", "*", label):
            return FramePlan(False, f"{own_type}; transfer-syntax={label}")
        if part_range.matches(OCTET_STREAM):
            if wanted in ("*", label):
                return FramePlan(False, f"{OCTET_STREAM}; transfer-syntax={label}")
            if wanted in (None, "", ExplicitVRLittleEndian):
                return FramePlan(not native, f"{OCTET_STREAM}; transfer-syntax={ExplicitVRLittleEndian}")
    raise NotAcceptable(f"acceptable: multipart/related; type=\"{own_type}\" or \"{OCTET_STREAM}\"")
