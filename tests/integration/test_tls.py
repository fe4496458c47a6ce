"""DICOM TLS end to end: dcmtk and pynetdicom over TLS to `pacs serve` / `pacs scp`, with a throwaway PKI.

One node (client certificates verified when presented) serves most tests; a `pacs scp` that requires client
certificates serves the mutual-TLS ones. Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelGet, Verification

from shared.dicom.requestor import keep_reactor_off_responses
from tests.certificates import Identity, Pki, make_pki
from tests.factory import make_image, uncompressed_set, with_file_meta
from tests.node import PACS, REPO, Node, free_port, port_accepts, wait_until
from tests.peers import dcmtk_env, dcmtk_tool

pytestmark = pytest.mark.dcmtk

TLS_AET = "TLSMODALITY"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_env(pki: Pki, port: int, require_client_certificate: bool = False) -> dict[str, str]:
    return {"PACS_TLS_PORT": str(port), "PACS_TLS_CERTIFICATE": str(pki.server.certificate),
            "PACS_TLS_PRIVATE_KEY": str(pki.server.private_key), "PACS_TLS_CA_CERTIFICATES": str(pki.ca.certificate),
            "PACS_TLS_REQUIRE_CLIENT_CERTIFICATE": str(require_client_certificate).lower()}


class TlsNode(Node):
    def __init__(self, workdir: Path, pki: Pki, require_client_certificate: bool = False) -> None:
        self.tls_port = free_port()
        super().__init__(workdir, tls_env(pki, self.tls_port, require_client_certificate))
        self.pki = pki

    def wait_tls(self) -> None:
        wait_until(lambda: port_accepts(self.tls_port), 30, "the DICOM TLS port")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[TlsNode]:
    """`pacs serve` with a TLS listener that verifies client certificates when they are presented."""
    node = TlsNode(tmp_path_factory.mktemp("tls-node"), pki)
    node.service("serve")
    try:
        node.wait_ready()
        node.wait_tls()
        yield node
    finally:
        node.stop()
        print(node.logs())


def tls_options(pki: Pki, identity: Identity | None) -> list[str]:
    """dcmtk: our certificate (or anonymous TLS), and the CA the node's certificate must chain to (-rc default)."""
    mine = ["+tls", str(identity.private_key), str(identity.certificate)] if identity else ["+tla"]
    return [*mine, "+cf", str(pki.ca.certificate)]


def dcmtk(tool: str, port: int, options: list[str], *paths: Path, called_aet: str = "PACS",
          calling_aet: str = TLS_AET, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    command = [dcmtk_tool(tool), "-aet", calling_aet, "-aec", called_aet, *options, "127.0.0.1", str(port),
               *map(str, paths)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=dcmtk_env())


def indexed(node: Node, sop_instance_uid: str) -> dict[str, object]:
    response = node.get(f"/api/instances/{sop_instance_uid}")
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


# ---- TLS with dcmtk -------------------------------------------------------------------------------------------

def test_echoscu_and_storescu_over_tls_store_and_index_300_instances_on_one_association(
    node: TlsNode, pki: Pki, tmp_path: Path,
) -> None:
    echo = dcmtk("echoscu", node.tls_port, tls_options(pki, pki.client))
    assert echo.returncode == 0, echo.stdout + echo.stderr
    files = uncompressed_set(tmp_path / "tls", 300)
    push = dcmtk("storescu", node.tls_port, [*tls_options(pki, pki.client), "+sd"], tmp_path / "tls")
    assert push.returncode == 0, push.stdout + push.stderr
    for item in files:  # each answered only once it is indexed
        record = wait_until(lambda: node.get(f"/api/instances/{item.sop_instance_uid}").status_code == 200, 60,
                            "the instance indexed")
        assert record
    first = indexed(node, files[0].sop_instance_uid)
    assert first["remote_aet"] == TLS_AET and first["called_aet"] == "PACS" and first["remote_ip"] == "127.0.0.1"
    assert first["size"] == first["stored_size"]


def test_the_plain_port_keeps_working_alongside(node: TlsNode, tmp_path: Path) -> None:
    echo = dcmtk("echoscu", node.dicom_port, [], calling_aet="PLAINSCU")
    assert echo.returncode == 0, echo.stdout + echo.stderr
    [sample] = uncompressed_set(tmp_path / "plain", 1)
    push = dcmtk("storescu", node.dicom_port, [], sample.path, calling_aet="PLAINSCU")
    assert push.returncode == 0, push.stdout + push.stderr
    wait_until(lambda: node.get(f"/api/instances/{sample.sop_instance_uid}").status_code == 200, 60, "indexed")
    assert indexed(node, sample.sop_instance_uid)["remote_aet"] == "PLAINSCU"
    scp = next(item for item in node.status()["services"]["scp"] if item["alive"])
    assert (scp["port"], scp["tls_port"]) == (node.dicom_port, node.tls_port)


def test_anonymous_tls_is_accepted_while_client_certificates_are_optional(node: TlsNode, pki: Pki) -> None:
    echo = dcmtk("echoscu", node.tls_port, tls_options(pki, None))
    assert echo.returncode == 0, echo.stdout + echo.stderr


def test_an_untrusted_client_certificate_is_rejected_even_when_certificates_are_optional(
    node: TlsNode, pki: Pki,
) -> None:
    echo = dcmtk("echoscu", node.tls_port, tls_options(pki, pki.stranger))
    assert echo.returncode != 0
    assert "Association Request Failed" in echo.stdout + echo.stderr
    wait_until(lambda: "reason=CERTIFICATE_VERIFY_FAILED" in node.services["serve"].log(), 10, "the refusal logged")

    def audited() -> list[dict[str, object]]:
        rows: list[dict[str, object]] = node.get("/api/audit?action=tls_handshake_failed").json()["events"]
        return [row for row in rows if row["details"] == {"reason": "CERTIFICATE_VERIFY_FAILED"}]

    [row, *_] = wait_until(audited, 10, "the refusal audited")
    assert (row["outcome"], row["remote_ip"], row["remote_aet"]) == ("refused", "127.0.0.1", "")


def test_plaintext_to_the_tls_port_gets_no_association(node: TlsNode) -> None:
    echo = dcmtk("echoscu", node.tls_port, [], calling_aet="PLAINSCU")
    assert echo.returncode != 0
    assert "Association Request Failed" in echo.stdout + echo.stderr
    ae = AE(ae_title="PLAINSCU")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 10
    association = ae.associate("127.0.0.1", node.tls_port, ae_title="PACS")
    assert not association.is_established


def test_the_access_policy_applies_over_tls(node: TlsNode, pki: Pki) -> None:
    echo = dcmtk("echoscu", node.tls_port, tls_options(pki, pki.client), called_aet="NOT-PACS")
    assert echo.returncode != 0
    assert "Association Rejected" in echo.stdout + echo.stderr
    assert "Called AE Title Not Recognized" in echo.stdout + echo.stderr


# ---- protocol versions (python's ssl as the client) -----------------------------------------------------------

def client_context(pki: Pki, maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca.certificate))
    context.load_cert_chain(str(pki.client.certificate), str(pki.client.private_key))
    if maximum is not None:
        context.maximum_version = maximum
    return context


def legacy_tls_1_1_client() -> ssl.SSLContext:
    """A client that offers TLS 1.1 only (OpenSSL 3 needs security level 0 for it)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.minimum_version = ssl.TLSVersion.TLSv1_1
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    return context


def handshake(port: int, context: ssl.SSLContext) -> tuple[str | None, tuple[str, str, int] | None, str | None]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            return tls.version(), tls.cipher(), tls.compression()


@pytest.fixture
def permissive_server(pki: Pki) -> Iterator[int]:
    """A TLS server that still speaks TLS 1.1: shows the legacy client really offers it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.minimum_version = ssl.TLSVersion.TLSv1_1
    context.load_cert_chain(str(pki.server.certificate), str(pki.server.private_key))
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        try:
            connection, _ = listener.accept()
        except OSError:
            return
        with context.wrap_socket(connection, server_side=True) as tls:
            tls.recv(1)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port
    listener.close()
    thread.join(10)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls_1_1_is_refused(node: TlsNode, permissive_server: int) -> None:
    assert handshake(permissive_server, legacy_tls_1_1_client())[0] == "TLSv1.1"  # the client can speak it
    with pytest.raises(ssl.SSLError) as refused:
        handshake(node.tls_port, legacy_tls_1_1_client())
    assert "PROTOCOL_VERSION" in str(refused.value).upper()


def test_tls_1_2_and_1_3_are_accepted_with_bcp195_suites_and_no_compression(node: TlsNode, pki: Pki) -> None:
    version, cipher, compression = handshake(node.tls_port, client_context(pki, ssl.TLSVersion.TLSv1_2))
    assert version == "TLSv1.2" and compression is None
    assert cipher is not None and cipher[0] in ("ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-ECDSA-AES128-GCM-SHA256",
                                                "ECDHE-ECDSA-CHACHA20-POLY1305")
    version, cipher, compression = handshake(node.tls_port, client_context(pki))
    assert version == "TLSv1.3" and compression is None


def test_pynetdicom_over_tls_echoes_and_stores(node: TlsNode, pki: Pki, tmp_path: Path) -> None:
    [sample] = uncompressed_set(tmp_path / "pynetdicom", 1)
    ae = AE(ae_title="PYTLS")
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage, "1.2.840.10008.1.2.1")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    association = ae.associate("127.0.0.1", node.tls_port, ae_title="PACS",
                               tls_args=(client_context(pki), "localhost"))
    assert association.is_established
    keep_reactor_off_responses(association)
    try:
        assert association.send_c_echo().Status == 0
        assert association.send_c_store(dcmread(sample.path)).Status == 0
    finally:
        association.release()
    wait_until(lambda: node.get(f"/api/instances/{sample.sop_instance_uid}").status_code == 200, 60, "indexed")


def test_query_and_retrieve_over_tls_with_large_instances(node: TlsNode, pki: Pki, tmp_path: Path) -> None:
    """C-STORE of 512x512 images (many TLS records each way), C-FIND with findscu, C-GET back on the association."""
    answer = httpx.put(f"{node.api}/api/modalities/tls-workstation", timeout=10, json={
        "ae_title": "TLSWS", "host": "127.0.0.1", "port": 104, "allow": ["echo", "store", "find", "get"]})
    assert answer.status_code in (200, 201), answer.text
    study_uid, series_uid = generate_uid(), generate_uid()
    images = [with_file_meta(make_image(CTImageStorage, study_uid, series_uid, instance_number=number, rows=512,
                                        columns=512), ExplicitVRLittleEndian) for number in range(1, 4)]
    sent = {image.SOPInstanceUID: image.PixelData for image in images}
    received: dict[str, bytes] = {}

    def on_store(event: evt.Event) -> int:
        received[event.dataset.SOPInstanceUID] = event.dataset.PixelData
        return 0

    ae = AE(ae_title="TLSWS")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    association = ae.associate("127.0.0.1", node.tls_port, ae_title="PACS", tls_args=(client_context(pki), "localhost"),
                               ext_neg=[build_role(CTImageStorage, scu_role=True, scp_role=True)],
                               evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert association.is_established
    keep_reactor_off_responses(association)
    try:
        for image in images:
            assert association.send_c_store(image).Status == 0
        for uid in sent:
            wait_until(lambda: node.get(f"/api/instances/{uid}").status_code == 200, 60, "indexed")
        find = dcmtk("findscu", node.tls_port, [*tls_options(pki, pki.client), "-S", "-k", "QueryRetrieveLevel=STUDY",
                                                 "-k", f"StudyInstanceUID={study_uid}",
                                                 "-k", "NumberOfStudyRelatedInstances"], calling_aet="TLSWS")
        assert find.returncode == 0, find.stdout + find.stderr
        assert "(0020,1208) IS [3 ]" in find.stdout + find.stderr  # padded to an even length
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = study_uid
        statuses = [int(status.Status) for status, _ in
                    association.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)]
        assert statuses[-1] == 0, statuses
    finally:
        association.release()
    assert received == sent


def test_a_silent_connection_does_not_hold_up_other_tls_clients(node: TlsNode, pki: Pki) -> None:
    with socket.create_connection(("127.0.0.1", node.tls_port), timeout=10):  # connects, never says hello
        echo = dcmtk("echoscu", node.tls_port, tls_options(pki, pki.client), timeout=60)
        assert echo.returncode == 0, echo.stdout + echo.stderr


# ---- client certificates required -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mutual_node(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[TlsNode]:
    """`pacs scp` alone, requiring a client certificate issued by the test CA."""
    node = TlsNode(tmp_path_factory.mktemp("mutual-tls"), pki, require_client_certificate=True)
    assert node.run("migrate").returncode == 0
    node.service("scp")
    try:
        node.wait_tls()
        yield node
    finally:
        node.stop()
        print(node.logs())


def test_required_client_certificates_a_trusted_one_works(mutual_node: TlsNode, pki: Pki) -> None:
    echo = dcmtk("echoscu", mutual_node.tls_port, tls_options(pki, pki.client))
    assert echo.returncode == 0, echo.stdout + echo.stderr


@pytest.mark.parametrize("who", ["no certificate", "untrusted certificate"])
def test_required_client_certificates_none_or_untrusted_is_rejected(mutual_node: TlsNode, pki: Pki, who: str) -> None:
    identity = None if who == "no certificate" else pki.stranger
    echo = dcmtk("echoscu", mutual_node.tls_port, tls_options(pki, identity))
    assert echo.returncode != 0
    assert "Association Request Failed" in echo.stdout + echo.stderr
    context = ssl.create_default_context(cafile=str(pki.ca.certificate))  # python's ssl without a certificate
    with pytest.raises((ssl.SSLError, ConnectionError)):
        with socket.create_connection(("127.0.0.1", mutual_node.tls_port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"\x01")  # TLS 1.3: the refusal arrives after the client's Finished
                if not tls.recv(1):
                    raise ConnectionError("closed without an answer")


def test_the_plain_port_of_a_mutual_tls_node_still_answers(mutual_node: TlsNode) -> None:
    echo = dcmtk("echoscu", mutual_node.dicom_port, [], calling_aet="PLAINSCU")
    assert echo.returncode == 0, echo.stdout + echo.stderr


# ---- unusable certificates stop the start -----------------------------------------------------------------------

def start_once(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PACS, command], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("command", ["scp", "serve"])
def test_a_missing_certificate_stops_the_start_naming_the_file(pki: Pki, tmp_path: Path, command: str) -> None:
    node = TlsNode(tmp_path, pki)
    missing = tmp_path / "gone" / "server.key"
    env = dict(node.env, PACS_TLS_PRIVATE_KEY=str(missing))
    result = start_once(command, env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"tls_private_key: {missing}: no such file" in result.stderr
    assert "Traceback" not in result.stderr and "child_exited" not in result.stderr
    assert not port_accepts(node.dicom_port) and not port_accepts(node.tls_port)
    assert not (node.data_dir / "pacs.pid").exists()
