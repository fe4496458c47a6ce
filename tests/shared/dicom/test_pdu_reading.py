"""The DUL thread's PDU reading that offers P-DATA-TF to our handlers first (shared.dicom.pdu_reading)."""

from __future__ import annotations

import queue
import struct
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from shared.dicom import pdu_reading
from shared.dicom.pdu_reading import INVALID_PDU, ProtocolViolation, read_p_data_first


class FakeSocket:
    """Hands out the bytes of the PDUs given, as pynetdicom's AssociationSocket.recv does."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def recv(self, count: int) -> bytearray:
        chunk, self._data = self._data[:count], self._data[count:]
        return bytearray(chunk)


class RecordingHandler:
    def __init__(self, assoc: Any, violation: bool = False) -> None:
        self._assoc = assoc
        self._violation = violation
        self.established_when_offered: list[bool] = []

    def on_p_data(self, body: bytearray) -> bytes | None:
        self.established_when_offered.append(self._assoc.is_established)
        if self._violation:
            raise ProtocolViolation("test")
        return None

    def on_other_pdu(self) -> None:
        pass


def p_data_tf(payload: bytes = b"\x00\x00\x00\x03\x01\x03x") -> bytes:
    return struct.pack(">BBL", 0x04, 0, len(payload)) + payload


def association(data: bytes, established: bool) -> Any:
    assoc = SimpleNamespace(is_established=established, is_aborted=False, is_released=False)
    assoc.dul = SimpleNamespace(socket=FakeSocket(data), event_queue=queue.Queue(), assoc=assoc,
                                state_machine=SimpleNamespace(current_state="Sta6"))
    return assoc


def events(assoc: Any) -> list[str]:
    return list(assoc.dul.event_queue.queue)


def test_a_request_read_before_the_association_thread_marks_it_established_waits_for_that_mark() -> None:
    assoc = association(p_data_tf(), established=False)
    handler = RecordingHandler(assoc)
    read_p_data_first(assoc, handler)
    marker = threading.Timer(0.05, lambda: setattr(assoc, "is_established", True))
    marker.start()
    assoc.dul._read_pdu_data()
    marker.join()
    assert handler.established_when_offered == [True]
    assert events(assoc) == []


def test_a_protocol_violation_read_that_early_still_aborts() -> None:
    assoc = association(p_data_tf(), established=False)
    handler = RecordingHandler(assoc, violation=True)
    read_p_data_first(assoc, handler)
    threading.Timer(0.05, lambda: setattr(assoc, "is_established", True)).start()
    assoc.dul._read_pdu_data()
    assert events(assoc) == [INVALID_PDU]


def test_an_association_never_marked_established_is_aborted_without_offering_the_request(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pdu_reading, "ESTABLISHING_SECONDS", 0.05)
    assoc = association(p_data_tf(), established=False)
    handler = RecordingHandler(assoc)
    read_p_data_first(assoc, handler)
    started = time.monotonic()
    assoc.dul._read_pdu_data()
    assert time.monotonic() - started < 2.0
    assert handler.established_when_offered == [] and events(assoc) == [INVALID_PDU]


def test_an_association_aborted_while_waiting_stops_the_wait_at_once() -> None:
    assoc = association(p_data_tf(), established=False)
    assoc.is_aborted = True
    handler = RecordingHandler(assoc)
    read_p_data_first(assoc, handler)
    assoc.dul._read_pdu_data()
    assert handler.established_when_offered == [] and events(assoc) == [INVALID_PDU]
