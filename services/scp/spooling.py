"""Received data sets larger than SPOOL_ABOVE_BYTES go to disk as they arrive (shared.dicom.spooled).

pynetdicom creates a DIMSE message (with an in-memory ``BytesIO`` for its data set) when the first fragment of a
request arrives; for our acceptor associations that message gets a SpooledDataset instead. A C-STORE of a 1 GB
multi-frame instance then costs the SCP SPOOL_ABOVE_BYTES of memory, not twice the instance.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pynetdicom.dimse_messages import DIMSEMessage

from shared.dicom.spooled import SpooledDataset

SPOOL_ABOVE_BYTES = 16 << 20


@dataclass(frozen=True)
class ReceivedSpool:
    folder: Path  # on the data disk: an anonymous file there holds each large data set while it is handled
    above_bytes: int = SPOOL_ABOVE_BYTES


def spool_received_datasets(assoc: Any, spool: ReceivedSpool) -> None:
    dimse = assoc.dimse
    receive = dimse.receive_primitive

    def receive_into_spool(primitive: Any) -> None:
        if dimse.message is None:
            message = DIMSEMessage()
            message.data_set = SpooledDataset(spool.folder, spool.above_bytes)
            dimse.message = message
        receive(primitive)

    dimse.receive_primitive = receive_into_spool
