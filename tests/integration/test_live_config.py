"""Config is live: PATCH /api/config and PUT /api/modalities change the DICOM answers of a running node.

Each test drives `pacs serve` from outside (httpx for REST, dcmtk and pynetdicom for DICOM), checks the exact
answer, flips the key back, all without a restart. Propagation is by polling (at most 0.5 s), so every check
waits for the behaviour with wait_until. The tests that need no restart share one node (``node``), one after the
other: each must leave the configuration as it found it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from alembic import command
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.sop_class import Verification
from sqlalchemy import inspect

from shared.db.engine import create_index_engine
from shared.db.migrate import alembic_config
from tests.association_checks import (
    ACCEPTED,
    association_answer,
    associate,
    echo_status,
    echoscu_answer,
    parallel_associations,
    release_all,
    store_status,
    storescu_answer,
)
from tests.factory import make_image, save
from tests.faults import TcpProxy
from tests.node import Node, port_listens, wait_until

PROPAGATION = 10  # seconds a change may take to be seen, generously above the 0.5 s poll for a loaded machine
NOT_AUTHORIZED = 0x0124
CALLED_AET_NOT_RECOGNIZED = (1, 1, 7)
CALLING_AET_NOT_RECOGNIZED = (1, 1, 3)
LOCAL_LIMIT_EXCEEDED = (2, 3, 2)
TRANSFER_SYNTAXES_NOT_SUPPORTED = 0x04
ABSTRACT_SYNTAX_NOT_SUPPORTED = 0x03
PRIVATE_SOP_CLASS = "1.2.826.0.1.3680043.8.498.99.1"  # not a standard storage SOP class
CT_EXPLICIT = [(CTImageStorage, [ExplicitVRLittleEndian])]


def patch_config(node: Node, **values: Any) -> dict[str, Any]:
    response = httpx.patch(f"{node.api}/api/config", json=values, timeout=10)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def put_modality(node: Node, name: str, ae_title: str, allow: list[str], port: int = 104,
                 host: str = "127.0.0.1") -> None:
    response = httpx.put(f"{node.api}/api/modalities/{name}", timeout=10,
                         json={"ae_title": ae_title, "host": host, "port": port, "allow": allow})
    assert response.status_code in (200, 201), response.text


def store_from(port: int, calling_aet: str, sop_class_uid: str = CTImageStorage) -> int | tuple[int, int, int]:
    """C-STORE one new image from ``calling_aet``: the status, or the A-ASSOCIATE-RJ triple."""
    outcome = associate(port, [(sop_class_uid, [ExplicitVRLittleEndian])], calling_aet=calling_aet)
    if not outcome.accepted:
        assert outcome.rejection is not None, "association neither accepted nor rejected"
        return outcome.rejection
    try:
        return store_status(outcome.association, make_image(sop_class_uid))
    finally:
        release_all([outcome])


@pytest.fixture
def node(module_node: Node) -> Iterator[Node]:
    """The module's node. A test must put every key it changed back (checked here, so that a test that does not
    fails itself rather than the next one); the modalities it registered are removed."""
    config = module_node.get("/api/config").json()
    modalities = {entry["name"] for entry in module_node.get("/api/modalities").json()}
    yield module_node
    for entry in module_node.get("/api/modalities").json():
        if entry["name"] not in modalities:
            assert httpx.delete(f"{module_node.api}/api/modalities/{entry['name']}", timeout=10).status_code == 204
    left = {key: value for key, value in module_node.get("/api/config").json().items() if config[key] != value}
    if left:
        patch_config(module_node, **{key: config[key] for key in left})
    assert not left, f"the test left these keys changed: {left}"


def indexed_instances(node: Node) -> int:
    return int(node.settled_status()["counts"]["instances"])


def audit_rows(node: Node, action: str) -> list[tuple[str, str, str, dict[str, Any]]]:
    with sqlite3.connect(node.data_dir / "index.sqlite3", timeout=10) as connection:
        rows = connection.execute("SELECT outcome, remote_aet, remote_ip, details FROM audit_events "
                                  "WHERE action = ? ORDER BY pk", (action,)).fetchall()
    return [(outcome, aet, ip, json.loads(details)) for outcome, aet, ip, details in rows]


def test_a_wrong_called_ae_title_gets_1_1_7_and_the_check_can_be_switched_off_live(node: Node) -> None:
    port = node.dicom_port
    assert echoscu_answer(port, called_aet="NOTPACS") == CALLED_AET_NOT_RECOGNIZED
    assert association_answer(port, called_aet="NOTPACS") == CALLED_AET_NOT_RECOGNIZED  # pynetdicom: same numbers
    assert echoscu_answer(port) == ACCEPTED

    assert patch_config(node, check_called_aet=False)["check_called_aet"] is False
    wait_until(lambda: echoscu_answer(port, called_aet="NOTPACS") == ACCEPTED, PROPAGATION, "check off")

    patch_config(node, check_called_aet=True)
    wait_until(lambda: echoscu_answer(port, called_aet="NOTPACS") == CALLED_AET_NOT_RECOGNIZED, PROPAGATION,
               "check on again")
    assert echoscu_answer(port) == ACCEPTED


def test_unknown_callers_get_1_1_3_while_a_registered_modality_still_stores(node: Node, tmp_path: Path) -> None:
    port = node.dicom_port
    image = save(make_image(), tmp_path / "ct.dcm")
    held = indexed_instances(node)
    put_modality(node, "ct-scanner", "CTSCANNER", ["echo", "store"])
    assert echoscu_answer(port, calling_aet="STRANGER") == ACCEPTED  # default: anyone may echo and store

    patch_config(node, unknown_callers_allowed=[])
    wait_until(lambda: echoscu_answer(port, calling_aet="STRANGER") == CALLING_AET_NOT_RECOGNIZED, PROPAGATION,
               "unknown callers refused")
    assert storescu_answer(port, image, calling_aet="STRANGER") == CALLING_AET_NOT_RECOGNIZED
    assert echoscu_answer(port, calling_aet="CTSCANNER") == ACCEPTED
    assert storescu_answer(port, image, calling_aet="CTSCANNER") == "Success"
    node.wait_indexed(held + 1)

    # Unknown callers may echo but not store: association accepted, C-STORE refused 0x0124, C-ECHO Success.
    patch_config(node, unknown_callers_allowed=["echo"])
    wait_until(lambda: association_answer(port, calling_aet="STRANGER") == ACCEPTED, PROPAGATION, "echo only")
    assert echo_status(port, calling_aet="STRANGER") == 0x0000
    assert store_from(port, "STRANGER") == NOT_AUTHORIZED

    # A registered modality's own allow list decides for it, live (the probes that still stored are fine).
    put_modality(node, "ct-scanner", "CTSCANNER", ["echo"])
    wait_until(lambda: store_from(port, "CTSCANNER") == NOT_AUTHORIZED, PROPAGATION, "modality allow list")
    assert echo_status(port, calling_aet="CTSCANNER") == 0x0000
    assert storescu_answer(port, image, calling_aet="CTSCANNER") == "Unknown Status: 0x124"  # dcmtk's words
    put_modality(node, "ct-scanner", "CTSCANNER", ["store"])  # and a C-ECHO is refused the same way
    wait_until(lambda: echo_status(port, calling_aet="CTSCANNER") == NOT_AUTHORIZED, PROPAGATION, "echo refused")

    patch_config(node, unknown_callers_allowed=["echo", "store"])
    wait_until(lambda: store_from(port, "STRANGER") == 0x0000, PROPAGATION, "unknown callers store again")

    # Removing the modality makes its AE title an unknown caller again (which may store now).
    assert httpx.delete(f"{node.api}/api/modalities/ct-scanner", timeout=10).status_code == 204
    wait_until(lambda: store_from(port, "CTSCANNER") == 0x0000, PROPAGATION, "modality removed")


def test_a_context_in_a_transfer_syntax_not_accepted_gets_result_4(node: Node) -> None:
    port = node.dicom_port
    proposal = [(Verification, []), (CTImageStorage, [ImplicitVRLittleEndian]), (CTImageStorage, [ExplicitVRLittleEndian])]

    def context_results() -> list[int]:
        outcome = associate(port, proposal)
        release_all([outcome])
        return outcome.context_results

    held = indexed_instances(node)
    assert context_results() == [0x00, 0x00, 0x00]
    patch_config(node, accepted_transfer_syntaxes=[ExplicitVRLittleEndian])
    wait_until(lambda: context_results() == [0x00, TRANSFER_SYNTAXES_NOT_SUPPORTED, 0x00], PROPAGATION,
               "implicit VR refused")

    # CT Image Storage proposed only in Implicit VR LE: result 4 for that context (the exact byte, as received).
    outcome = associate(port, [(Verification, []), (CTImageStorage, [ImplicitVRLittleEndian])])
    try:
        assert outcome.accepted
        [rejected] = outcome.association.rejected_contexts
        assert rejected.abstract_syntax == CTImageStorage and rejected.result == TRANSFER_SYNTAXES_NOT_SUPPORTED
    finally:
        release_all([outcome])
    assert store_from(port, "EXPLICIT") == 0x0000  # the accepted syntax still stores

    patch_config(node, accepted_transfer_syntaxes=None)
    wait_until(lambda: context_results() == [0x00, 0x00, 0x00], PROPAGATION, "every syntax again")
    node.wait_indexed(held + 1)


def test_associations_over_max_associations_get_2_3_2_and_the_accepted_ones_store(node: Node) -> None:
    port = node.dicom_port

    def third_is_refused() -> bool:
        held = [associate(port) for _ in range(2)]
        try:
            assert all(outcome.accepted for outcome in held)
            return association_answer(port) == LOCAL_LIMIT_EXCEEDED
        finally:
            release_all(held)

    def two_of_four_accepted() -> bool:  # every SCP process of the node polls the configuration on its own
        with parallel_associations(port, 4, ((Verification, ()),)) as outcomes:
            return sum(1 for outcome in outcomes if outcome.accepted) == 2

    instances = indexed_instances(node)
    patch_config(node, max_associations=2)
    wait_until(third_is_refused, PROPAGATION, "the limit of 2")
    wait_until(two_of_four_accepted, PROPAGATION, "the limit of 2 in every SCP process")

    with parallel_associations(port, 4, CT_EXPLICIT) as outcomes:
        accepted = [outcome for outcome in outcomes if outcome.accepted]
        rejections = [outcome.rejection for outcome in outcomes if not outcome.accepted]
        assert len(accepted) == 2
        assert rejections == [LOCAL_LIMIT_EXCEEDED] * 2
        for outcome in accepted:  # held open together, each completes a C-STORE
            assert store_status(outcome.association, make_image()) == 0x0000
    node.wait_indexed(instances + 2)

    def all_four_accepted() -> bool:
        with parallel_associations(port, 4, CT_EXPLICIT) as outcomes:
            return all(outcome.accepted for outcome in outcomes)

    patch_config(node, max_associations=64)
    wait_until(all_four_accepted, PROPAGATION, "the limit back to 64")


def test_blocked_and_allowed_calling_ae_titles(node: Node) -> None:
    port = node.dicom_port
    patch_config(node, blocked_calling_aets=["BADGUY"])
    wait_until(lambda: echoscu_answer(port, calling_aet="BADGUY") == CALLING_AET_NOT_RECOGNIZED, PROPAGATION,
               "BADGUY blocked")
    assert echoscu_answer(port, calling_aet="GOODGUY") == ACCEPTED

    # An allow-list admits only its members; block wins over allow and over a modality registration.
    put_modality(node, "bad", "BADGUY", ["echo", "store"])
    patch_config(node, allowed_calling_aets=["GOODGUY", "BADGUY"])
    wait_until(lambda: echoscu_answer(port, calling_aet="OTHER") == CALLING_AET_NOT_RECOGNIZED, PROPAGATION,
               "allow-list")
    assert echoscu_answer(port, calling_aet="GOODGUY") == ACCEPTED
    assert echoscu_answer(port, calling_aet="BADGUY") == CALLING_AET_NOT_RECOGNIZED

    patch_config(node, blocked_calling_aets=[], allowed_calling_aets=[])
    wait_until(lambda: echoscu_answer(port, calling_aet="OTHER") == ACCEPTED, PROPAGATION, "lists cleared")
    assert echoscu_answer(port, calling_aet="BADGUY") == ACCEPTED


def test_a_caller_outside_the_ip_allowlist_gets_1_1_3(node: Node) -> None:
    port = node.dicom_port
    patch_config(node, ip_allowlist=["10.0.0.0/8"])
    wait_until(lambda: echoscu_answer(port) == CALLING_AET_NOT_RECOGNIZED, PROPAGATION, "127.0.0.1 refused")
    assert association_answer(port) == CALLING_AET_NOT_RECOGNIZED

    patch_config(node, ip_allowlist=["10.0.0.0/8", "127.0.0.0/8"])
    wait_until(lambda: echoscu_answer(port) == ACCEPTED, PROPAGATION, "loopback allowed")
    patch_config(node, ip_allowlist=[])
    assert echoscu_answer(port) == ACCEPTED


def test_a_registered_ae_title_from_another_host_gets_1_1_3_once_hosts_are_checked(node: Node) -> None:
    port = node.dicom_port
    put_modality(node, "far", "FARAWAY", ["echo"], host="10.1.2.3")
    put_modality(node, "near", "NEARBY", ["echo"], host="localhost")  # a name resolving to 127.0.0.1
    assert echoscu_answer(port, calling_aet="FARAWAY") == ACCEPTED  # not checked by default
    patch_config(node, check_calling_aet_host=True)
    wait_until(lambda: echoscu_answer(port, calling_aet="FARAWAY") == CALLING_AET_NOT_RECOGNIZED, PROPAGATION,
               "FARAWAY from 127.0.0.1 refused")
    assert echoscu_answer(port, calling_aet="NEARBY") == ACCEPTED
    assert echoscu_answer(port, calling_aet="UNREGISTERED") == ACCEPTED  # unknown callers: unknown_callers_allowed
    wait_until(lambda: any(details.get("reason") == "calling_aet_wrong_host"
                           for _, _, _, details in audit_rows(node, "association_rejected")),
               PROPAGATION + 5, "the refusal audited")
    patch_config(node, check_calling_aet_host=False)
    wait_until(lambda: echoscu_answer(port, calling_aet="FARAWAY") == ACCEPTED, PROPAGATION, "check off again")


def test_a_disabled_service_is_refused_0124_whoever_calls(node: Node, tmp_path: Path) -> None:
    port = node.dicom_port
    held = indexed_instances(node)
    put_modality(node, "ct-scanner", "CTSCANNER", ["echo", "store"])
    # One PATCH is applied as a whole: once the marker AE title is refused, "store" is disabled too. Waiting on
    # the marker keeps the probes from storing anything.
    patch_config(node, enabled_services=["echo", "find", "move", "get"], blocked_calling_aets=["MARKER"])
    wait_until(lambda: echoscu_answer(port, calling_aet="MARKER") == CALLING_AET_NOT_RECOGNIZED, PROPAGATION,
               "the PATCH in force")
    assert store_from(port, "CTSCANNER") == NOT_AUTHORIZED
    assert store_from(port, "STRANGER") == NOT_AUTHORIZED
    assert storescu_answer(port, save(make_image(), tmp_path / "ct.dcm"), calling_aet="CTSCANNER") == \
        "Unknown Status: 0x124"  # dcmtk has no name for 0x0124
    assert echo_status(port) == 0x0000

    patch_config(node, enabled_services=["store"])
    wait_until(lambda: echo_status(port) == NOT_AUTHORIZED, PROPAGATION, "echo disabled")
    assert echoscu_answer(port) == "Unknown Status: 0x124"

    patch_config(node, enabled_services=["echo", "store", "find", "move", "get"], blocked_calling_aets=[])
    wait_until(lambda: echoscu_answer(port, calling_aet="MARKER") == ACCEPTED, PROPAGATION, "the PATCH in force")
    assert store_from(port, "CTSCANNER") == 0x0000
    assert echo_status(port) == 0x0000
    node.wait_indexed(held + 1)  # exactly one more: nothing refused was stored


def test_unknown_sop_classes_are_accepted_only_when_configured(node: Node) -> None:
    port = node.dicom_port

    def private_context_result() -> int:
        outcome = associate(port, [(Verification, []), (PRIVATE_SOP_CLASS, [ExplicitVRLittleEndian])])
        release_all([outcome])
        return outcome.context_results[1]

    held = indexed_instances(node)
    assert private_context_result() == ABSTRACT_SYNTAX_NOT_SUPPORTED
    patch_config(node, accept_unknown_sop_classes=True)
    wait_until(lambda: private_context_result() == 0x00, PROPAGATION, "unknown SOP classes accepted")
    assert store_from(port, "PRIVATE", PRIVATE_SOP_CLASS) == 0x0000
    node.wait_indexed(held + 1)

    patch_config(node, accept_unknown_sop_classes=False)
    wait_until(lambda: private_context_result() == ABSTRACT_SYNTAX_NOT_SUPPORTED, PROPAGATION, "refused again")


def test_every_refusal_is_logged_and_audited_without_blocking(node: Node) -> None:
    port = node.dicom_port
    logged_before = len(node.services["serve"].log())
    assert echoscu_answer(port, called_aet="NOTPACS", calling_aet="AUDITME") == CALLED_AET_NOT_RECOGNIZED
    patch_config(node, enabled_services=["echo"])
    wait_until(lambda: store_from(port, "AUDITME") == NOT_AUTHORIZED, PROPAGATION, "store disabled")

    rejected = wait_until(lambda: [row for row in audit_rows(node, "association_rejected") if row[1] == "AUDITME"],
                          PROPAGATION, "audit row")
    assert rejected[0] == ("rejected", "AUDITME", "127.0.0.1",
                           {"reason": "called_aet_not_recognized", "result": 1, "source": 1, "diagnostic": 7,
                            "called_aet": "NOTPACS"})
    refused = wait_until(lambda: [row for row in audit_rows(node, "request_refused") if row[1] == "AUDITME"],
                         PROPAGATION, "audit row")
    assert refused[0][:3] == ("refused", "AUDITME", "127.0.0.1")
    assert refused[0][3]["service"] == "store" and refused[0][3]["status"] == NOT_AUTHORIZED
    logs = node.services["serve"].log()[logged_before:]  # this test's lines
    assert "access.association_rejected reason=called_aet_not_recognized result=1 source=1 diagnostic=7" in logs
    assert "access.request_refused service=store status=0x0124" in logs

    patch_config(node, enabled_services=["echo", "store", "find", "move", "get"])
    wait_until(lambda: store_from(port, "AUDITME") == 0x0000, PROPAGATION, "store enabled again")


def test_config_and_modalities_survive_a_restart(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.service("serve")
    try:
        node.wait_ready()
        patch_config(node, unknown_callers_allowed=[], max_associations=5, storage_layout="date",
                     blocked_calling_aets=["BADGUY"], storage_max_bytes=10**12)
        put_modality(node, "ct-scanner", "CTSCANNER", ["echo", "store", "find"])
        wait_until(lambda: echoscu_answer(node.dicom_port, calling_aet="STRANGER") == CALLING_AET_NOT_RECOGNIZED,
                   PROPAGATION, "unknown callers refused")
        before = node.get("/api/config").json()
    finally:
        node.stop()
        print(node.logs())

    again = Node(tmp_path)  # same data directory, new ports, new processes
    again.service("serve", name="serve-again")
    try:
        again.wait_ready()
        assert again.get("/api/config").json() == before
        assert before["max_associations"] == 5 and before["storage_layout"] == "date"
        [modality] = again.get("/api/modalities").json()
        assert (modality["name"], modality["ae_title"], modality["allow"]) == \
            ("ct-scanner", "CTSCANNER", ["echo", "store", "find"])
        # Enforced from the first association on: no wait.
        assert echoscu_answer(again.dicom_port, calling_aet="STRANGER") == CALLING_AET_NOT_RECOGNIZED
        assert echoscu_answer(again.dicom_port, calling_aet="CTSCANNER") == ACCEPTED
    finally:
        again.stop()
        print(again.logs())


def test_an_scp_started_with_the_database_down_applies_the_cached_config(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    proxy = TcpProxy(5432)
    proxy.start()
    proxied_url = postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    node = Node(tmp_path, {"PACS_DATABASE_URL": proxied_url, "PACS_BROKER_URL": redis_url})
    try:
        migrate = node.run("migrate")
        assert migrate.returncode == 0, migrate.stderr
        node.service("api", extra_env={"PACS_DATABASE_URL": postgres_url})  # the API keeps its database
        node.service("scp")
        node.wait_ready()
        port = node.dicom_port
        put_modality(node, "ct-scanner", "CTSCANNER", ["echo", "store"])
        patch_config(node, unknown_callers_allowed=[])
        wait_until(lambda: echoscu_answer(port, calling_aet="STRANGER") == CALLING_AET_NOT_RECOGNIZED,
                   PROPAGATION, "unknown callers refused")
        assert json.loads((node.data_dir / "config-cache.json").read_text())["settings"] == \
            {"unknown_callers_allowed": []}

        proxy.cut()  # PostgreSQL unreachable for the SCP
        node.services["scp"].stop()
        node.service("scp", name="scp-database-down")
        wait_until(lambda: port_listens(port), 10, "the restarted SCP")
        assert echoscu_answer(port, calling_aet="STRANGER") == CALLING_AET_NOT_RECOGNIZED
        assert echoscu_answer(port, calling_aet="CTSCANNER") == ACCEPTED
        assert store_from(port, "CTSCANNER") == 0x0000  # ingest goes on (invariant 3)

        patch_config(node, unknown_callers_allowed=["echo"])  # the API still reaches the database
        proxy.restore()
        wait_until(lambda: echoscu_answer(port, calling_aet="STRANGER") == ACCEPTED, 30,
                   "the SCP to read the database again")
        assert store_from(port, "STRANGER") == NOT_AUTHORIZED
    finally:
        node.stop()
        proxy.cut()
        print(node.logs())


def test_migration_0002_upgrades_and_downgrades_on_sqlite_and_postgresql(tmp_path: Path, postgres_url: str) -> None:
    for url in (f"sqlite:///{tmp_path / 'index.sqlite3'}", postgres_url):
        config = alembic_config(url)
        command.upgrade(config, "head")
        engine = create_index_engine(url)
        try:
            with engine.connect() as connection:
                tables = set(inspect(connection).get_table_names())
                assert {"node_settings", "modalities"} <= tables
                assert inspect(connection).get_pk_constraint("modalities")["name"] == "pk_modalities"
                assert inspect(connection).get_pk_constraint("node_settings")["name"] == "pk_node_settings"
            command.downgrade(config, "0001")  # through 0002's downgrade (and any later revision's)
            with engine.connect() as connection:
                assert not {"node_settings", "modalities"} & set(inspect(connection).get_table_names())
            command.upgrade(config, "0002")
            with engine.connect() as connection:
                version = connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
                assert {"node_settings", "modalities"} <= set(inspect(connection).get_table_names())
            assert version == "0002"
            command.upgrade(config, "head")
        finally:
            engine.dispose()
    with psycopg.connect(postgres_url.replace("+psycopg", "")) as connection:
        assert connection.execute("SELECT count(*) FROM modalities").fetchone() == (0,)
