"""`pacs status`: is the node answering? C-ECHO on the DICOM port and GET /api/status on the API."""

from __future__ import annotations

import logging

import httpx
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from shared.settings import Settings

LOOPBACK_FOR_ANY = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def _echo(settings: Settings) -> str | None:
    """None when C-ECHO succeeded, else why not."""
    ae = AE(ae_title="PACS-STATUS")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 5
    host = LOOPBACK_FOR_ANY.get(settings.dicom_host, settings.dicom_host)
    association = ae.associate(host, settings.dicom_port, ae_title=settings.ae_title)
    if not association.is_established:
        return "association refused or no listener"
    try:
        answer = association.send_c_echo()
        if not answer or answer.get("Status") != 0x0000:
            return "C-ECHO failed"
        return None
    finally:
        association.release()


def report_status(settings: Settings) -> int:
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)  # the report below says what failed
    host = LOOPBACK_FOR_ANY.get(settings.api_host, settings.api_host)
    echo_problem = _echo(settings)
    print(f"DICOM  {settings.ae_title}@{settings.dicom_host}:{settings.dicom_port}  "
          + ("C-ECHO ok" if echo_problem is None else f"DOWN: {echo_problem}"))
    api_ok = False
    try:
        token = settings.api_admin_token.get_secret_value() if settings.api_admin_token else None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = httpx.get(f"http://{host}:{settings.api_port}/api/status", headers=headers, timeout=5)
        api_ok = response.status_code == 200
        if response.status_code in (401, 403):  # alive, but the counts need a token (PACS_API_ADMIN_TOKEN)
            health = httpx.get(f"http://{host}:{settings.api_port}/healthz", timeout=5)
            api_ok = health.status_code == 200
            print(f"API    http://{host}:{settings.api_port}  " + ("ok (counts need an API token)" if api_ok
                                                                    else f"DOWN: HTTP {health.status_code}"))
        elif api_ok:
            body = response.json()
            counts, queue = body["counts"], body["queue"]
            print(f"API    http://{host}:{settings.api_port}  ok, version {body['version']}")
            print(f"INDEX  {counts['patients']} patients, {counts['studies']} studies, {counts['series']} series, "
                  f"{counts['instances']} instances; {queue['pending']} waiting to be indexed, "
                  f"{queue['dead_letter']} dead letters")
        else:
            print(f"API    http://{host}:{settings.api_port}  DOWN: HTTP {response.status_code}")
    except httpx.HTTPError as exc:
        print(f"API    http://{host}:{settings.api_port}  DOWN: {exc.__class__.__name__}")
    return 0 if echo_problem is None and api_ok else 1
