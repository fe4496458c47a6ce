"""TCP options that keep DICOM round trips from stalling on delayed ACKs (PERFORMANCE.md, Nagle)."""

from __future__ import annotations

import socket

_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


def quickack(sock: socket.socket) -> None:
    """Acknowledge incoming segments at once. Linux clears the mode again after a while: set it before waiting."""
    if _QUICKACK is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        except OSError:
            pass
