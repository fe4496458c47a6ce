"""The identifying UIDs of a received dataset: the code lives in shared.ingest_identify (C-STORE and STOW-RS)."""

from __future__ import annotations

from shared.ingest_identify import InstanceIdentity, UnreadableDataset, identify

__all__ = ["InstanceIdentity", "UnreadableDataset", "identify"]
