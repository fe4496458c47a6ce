"""Which stored instances a C-MOVE or C-GET identifier asks for.

The identifier's keys are matched at IMAGE level (higher-level keys filter relationally), so a STUDY-level
request yields every instance of the matching studies. A request must name what it wants: at least one
non-empty identifying key of its level (the unique key, or AccessionNumber / PatientID where those exist);
otherwise it matches nothing (an empty StudyInstanceUID never means "everything").
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.db.models import Instance, Series
from shared.jobs import Item
from shared.query.matching import parse_matcher
from shared.query.search import matching_statement

IDENTIFYING_KEYS = {
    "PATIENT": ("PatientID",),
    "STUDY": ("StudyInstanceUID", "AccessionNumber", "PatientID"),
    "SERIES": ("SeriesInstanceUID",),
    "IMAGE": ("SOPInstanceUID",),
}
_VR = {"PatientID": "LO", "AccessionNumber": "SH"}


def names_what_it_wants(level: str, values: dict[str, Any]) -> bool:
    return any(parse_matcher(values.get(key), _VR.get(key, "UI")).kind != "universal"
               for key in IDENTIFYING_KEYS[level])


def instances_to_retrieve(session: Session, level: str, values: dict[str, Any]) -> list[Item]:
    if not names_what_it_wants(level, values):
        return []
    statement, _ = matching_statement("IMAGE", values)  # keys outside the index do not narrow a retrieve
    wanted = statement.subquery()
    rows = session.execute(
        select(Instance.sop_instance_uid, Instance.sop_class_uid, Instance.transfer_syntax, Instance.object_key)
        .join(Series, Instance.series_fk == Series.pk)
        .where(Instance.pk.in_(select(wanted.c.pk)))
        .order_by(Series.series_number, Series.pk, Instance.instance_number, Instance.pk))
    return [Item(*row) for row in rows]
