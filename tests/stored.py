"""Find an instance's object in a node's local object folder, whatever the storage layout and naming."""

from __future__ import annotations

from pathlib import Path


def stored_object(data_dir: Path, sop_instance_uid: str) -> Path:
    """The one file of this SOP Instance UID under ``data_dir/objects`` (names end in [<prefix>_]<SOP UID>.dcm)."""
    matches = [path for path in (data_dir / "objects").rglob("*.dcm")
               if path.name == f"{sop_instance_uid}.dcm" or path.name.endswith(f"_{sop_instance_uid}.dcm")]
    assert len(matches) == 1, f"{len(matches)} objects for one SOP Instance UID"
    return matches[0]
