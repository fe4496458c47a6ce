"""Names are decoded with the dataset's Specific Character Set and indexed as Unicode (one node for the module,
a patient of its own for each character set)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.factory import SampleFile, make_image, save
from tests.node import Node
from tests.peers import push_files

JAPANESE_NAME = "Yamada^Tarou=山田^太郎=やまだ^たろう"


@pytest.mark.parametrize(
    ("charset", "name", "search_form"),
    [
        ("ISO_IR 100", "Müller^Jürgen", "muller^jurgen"),
        (["", "ISO 2022 IR 87"], JAPANESE_NAME, JAPANESE_NAME.casefold()),
        ("ISO_IR 192", "Ελληνικά^Δοκιμή", "ελληνικα^δοκιμη"),
    ],
    ids=["latin1", "iso2022-ir87", "utf8-greek"],
)
def test_patient_names_are_indexed_as_the_right_unicode_text(
    module_node: Node, tmp_path: Path, request: pytest.FixtureRequest, charset: str | list[str], name: str,
    search_form: str
) -> None:
    patient_id = f"CHARSET-{request.node.callspec.id}"
    dataset = make_image(charset=charset, patient_name=name, patient_id=patient_id)  # type: ignore[arg-type]
    path = save(dataset, tmp_path / "named.dcm")
    raw = path.read_bytes()
    assert name.encode("utf-8") not in raw or charset == "ISO_IR 192"  # really encoded in its own charset

    held = module_node.settled_status()["counts"]["instances"]
    push_files(module_node.dicom_port, [SampleFile(path, "1.2.840.10008.1.2.1", dataset.SOPInstanceUID)])
    module_node.wait_indexed(held + 1)

    with sqlite3.connect(module_node.data_dir / "index.sqlite3") as connection:
        stored_name, stored_search = connection.execute(
            "SELECT patient_name, patient_name_search FROM patients WHERE patient_id = ?", (patient_id,)).fetchone()
    assert stored_name == name
    assert stored_search == search_form
