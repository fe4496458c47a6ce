"""Auto-forward conditions: validation of rule bodies and matching of calling AE titles, modalities and tags."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.routing import Conditions, RuleFields, Subject, matches, retry_delay_seconds, tag_key

ATTRIBUTES = {
    "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]},
    "00081030": {"vr": "LO", "Value": ["CT HEAD w/o contrast"]},
    "00200013": {"vr": "IS", "Value": [7]},
    "00080008": {"vr": "CS", "Value": ["ORIGINAL", "PRIMARY", "AXIAL"]},
}
SUBJECT = Subject(frozenset({"CT_ROOM3"}), frozenset({"CT", "SR"}), ATTRIBUTES)


def test_tags_are_named_by_keyword_or_by_tag() -> None:
    assert tag_key("StudyDescription") == "00081030"
    assert tag_key("0008103e") == "0008103E"
    with pytest.raises(ValueError):
        tag_key("NoSuchKeyword")


@pytest.mark.parametrize("conditions, expected", [
    ({}, True),
    ({"calling_aet": ["CT_ROOM3", "MR1"]}, True),
    ({"calling_aet": ["MR1"]}, False),
    ({"modality": ["SR"]}, True),
    ({"modality": ["MR"]}, False),
    ({"tags": {"StudyDescription": "*HEAD*"}}, True),
    ({"tags": {"StudyDescription": "*head*"}}, False),  # case-sensitive, as DICOM matching
    ({"tags": {"PatientName": "Doe^J?ne"}}, True),  # a person name by its alphabetic form
    ({"tags": {"InstanceNumber": "7"}}, True),
    ({"tags": {"ImageType": "AXIAL"}}, True),  # any value of a multi-valued attribute
    ({"tags": {"AccessionNumber": "*"}}, False),  # an attribute the instance lacks matches nothing
    ({"modality": ["CT"], "tags": {"StudyDescription": "CT*", "ImageType": "DERIVED"}}, False),  # all must hold
])
def test_every_condition_must_hold(conditions: dict[str, object], expected: bool) -> None:
    assert matches(Conditions.model_validate(conditions), SUBJECT) is expected


def test_rule_bodies_are_validated() -> None:
    rule = RuleFields.model_validate({"destination": "archive-2", "conditions": {"calling_aet": [" CT1 "]}})
    assert rule.trigger == "study_stable" and rule.conditions.calling_aet == ["CT1"]
    for body in ({"destination": "../etc"}, {"destination": "a", "trigger": "hourly"},
                 {"destination": "a", "conditions": {"modality": [""]}}, {"destination": "a", "colour": 1},
                 {"destination": "a", "conditions": {"calling_aet": ["X" * 17]}}):
        with pytest.raises(ValidationError):
            RuleFields.model_validate(body)


def test_retries_back_off_exponentially_up_to_a_ceiling() -> None:
    assert [retry_delay_seconds(10, attempt, 60) for attempt in (1, 2, 3, 4, 5)] == [10, 20, 40, 60, 60]
