"""What a real peer gets back at association time: A-ASSOCIATE-RJ triples, context results, DIMSE statuses.

dcmtk's echoscu/storescu print the reject reason in words; pynetdicom gives the exact numbers
(``assoc.acceptor.primitive.result/result_source/diagnostic``) and the per-context results.
"""

from __future__ import annotations

import re
import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification

from shared.dicom.requestor import Rejection, keep_reactor_off_responses, rejection_of
from tests.factory import with_file_meta
from tests.peers import dcmtk_env, dcmtk_tool

ACCEPTED = "accepted"

# dcmtk (dul.cc, ASC_printRejectParameters) words for A-ASSOCIATE-RJ result, source and diagnostic
_DCMTK_RESULT = {"Rejected Permanent": 1, "Rejected Transient": 2}
_DCMTK_SOURCE = {"Service User": 1, "Service Provider (ACSE Related)": 2,
                 "Service Provider (Presentation Related)": 3}
_DCMTK_REASON = {
    (1, "No Reason Given"): 1, (1, "Application Context Name Not Supported"): 2,
    (1, "Calling AE Title Not Recognized"): 3, (1, "Called AE Title Not Recognized"): 7,
    (2, "No Reason Given"): 1, (2, "Protocol Version Not Supported"): 2,
    (3, "Temporary Congestion"): 1, (3, "Local Limit Exceeded"): 2,
}


def dcmtk_rejection(output: str) -> Rejection | None:
    """The A-ASSOCIATE-RJ a dcmtk tool reported ("Association Rejected: Result: …, Source: … Reason: …")."""
    if "Association Rejected" not in output:
        return None
    match = re.search(r"Result:\s*(.+?),\s*Source:\s*(.+?)\s*\n.*?Reason:\s*(.+?)\s*$", output, re.M | re.S)
    assert match, f"unexpected dcmtk rejection output: {output}"
    result, source_text, reason = (match.group(index).strip().lower() for index in (1, 2, 3))
    source = {key.lower(): value for key, value in _DCMTK_SOURCE.items()}[source_text]
    reasons = {(key_source, key.lower()): value for (key_source, key), value in _DCMTK_REASON.items()}
    return {key.lower(): value for key, value in _DCMTK_RESULT.items()}[result], source, reasons[(source, reason)]


def _dcmtk_answer(command: list[str], response: str) -> Rejection | str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, env=dcmtk_env())
    output = result.stdout + result.stderr
    rejection = dcmtk_rejection(output)
    if rejection is not None:
        return rejection
    match = re.search(rf"Received {response} Response \((.+?)\)\s*$", output, re.M)
    assert match, f"no {response} response and no association rejection: {output}"
    return match.group(1)


def echoscu_answer(port: int, called_aet: str = "PACS", calling_aet: str = "ECHOSCU") -> Rejection | str:
    """Run dcmtk echoscu: ``"accepted"`` when the echo succeeded, the A-ASSOCIATE-RJ triple when the association
    was rejected, else the echo status as dcmtk words it (``"Unknown Status: 0x124"``)."""
    answer = _dcmtk_answer([dcmtk_tool("echoscu"), "-v", "-aet", calling_aet, "-aec", called_aet, "127.0.0.1",
                            str(port)], "Echo")
    return ACCEPTED if answer == "Success" else answer


def storescu_answer(port: int, path: Path, called_aet: str = "PACS", calling_aet: str = "STORESCU") -> Rejection | str:
    """Run dcmtk storescu on one file: the store status as dcmtk words it ("Success", "Unknown Status: 0x124")
    or the A-ASSOCIATE-RJ triple."""
    return _dcmtk_answer([dcmtk_tool("storescu"), "-v", "-aet", calling_aet, "-aec", called_aet, "127.0.0.1",
                          str(port), str(path)], "Store")


@dataclass
class Outcome:
    """What a pynetdicom SCU got for one association request."""

    association: Association
    rejection: Rejection | None = None
    context_results: list[int] = field(default_factory=list)  # one result per proposed context, in order

    @property
    def accepted(self) -> bool:
        return self.association.is_established


def associate(port: int, contexts: Sequence[tuple[str, Sequence[str]]] = ((Verification, ()),),
              called_aet: str = "PACS", calling_aet: str = "PYSCU") -> Outcome:
    """Request an association proposing exactly ``contexts`` [(abstract syntax, [transfer syntaxes])].

    An empty transfer syntax list means pynetdicom's defaults. The association is left open when accepted.
    """
    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    for abstract, syntaxes in contexts:
        if syntaxes:
            ae.add_requested_context(abstract, list(syntaxes))
        else:
            ae.add_requested_context(abstract)
    assoc = ae.associate("127.0.0.1", port, ae_title=called_aet)
    if assoc.is_established:
        keep_reactor_off_responses(assoc)
    by_id = {int(context.context_id): int(context.result)
             for context in list(assoc.accepted_contexts) + list(assoc.rejected_contexts)}
    return Outcome(assoc, rejection_of(assoc), [by_id[key] for key in sorted(by_id)])


def association_answer(port: int, called_aet: str = "PACS", calling_aet: str = "PYSCU") -> Rejection | str:
    """``"accepted"`` (then released) or the A-ASSOCIATE-RJ triple, for a Verification-only association."""
    outcome = associate(port, called_aet=called_aet, calling_aet=calling_aet)
    if outcome.accepted:
        outcome.association.release()
        return ACCEPTED
    assert outcome.rejection is not None, "neither accepted nor rejected (aborted?)"
    return outcome.rejection


def echo_status(port: int, calling_aet: str = "PYSCU", called_aet: str = "PACS") -> int:
    outcome = associate(port, called_aet=called_aet, calling_aet=calling_aet)
    assert outcome.accepted, f"association not accepted: {outcome.rejection}"
    try:
        answer = outcome.association.send_c_echo()
        assert "Status" in answer, "no C-ECHO response"
        return int(answer.Status)
    finally:
        outcome.association.release()


def store_status(association: Association, dataset: Dataset, transfer_syntax: str = "1.2.840.10008.1.2.1") -> int:
    if "TransferSyntaxUID" not in getattr(dataset, "file_meta", {}):
        with_file_meta(dataset, transfer_syntax)
    answer = association.send_c_store(dataset)
    assert "Status" in answer, "no C-STORE response"
    return int(answer.Status)


@contextmanager
def parallel_associations(port: int, count: int, contexts: Sequence[tuple[str, Sequence[str]]],
                          calling_aet: str = "PARALLEL") -> Iterator[list[Outcome]]:
    """Request ``count`` associations at the same moment and hold the accepted ones open until the block ends."""
    outcomes: list[Outcome | None] = [None] * count
    errors: list[BaseException] = []
    start = threading.Barrier(count)

    def request(index: int) -> None:
        try:
            start.wait(timeout=30)
            outcomes[index] = associate(port, contexts, calling_aet=f"{calling_aet}{index}"[:16])
        except BaseException as exc:  # reported to the test below
            errors.append(exc)

    threads = [threading.Thread(target=request, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    held = [outcome for outcome in outcomes if outcome is not None]
    assert len(held) == count
    try:
        yield held
    finally:
        for outcome in held:
            if outcome.association.is_established:
                outcome.association.release()


def release_all(outcomes: Sequence[Any]) -> None:
    for outcome in outcomes:
        if outcome.association.is_established:
            outcome.association.release()
