"""DICOM TLS in the deployment files: deploy/compose.tls.yaml on top of deploy/compose.yaml, and the pacs-scp
port, Service port and Secret volume of deploy/k8s (turned on through configmap.yaml)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from services.scp.tls import server_context
from tests.certificates import make_pki
from tests.deploy import DEPLOY, settings_from, unknown_options
from tests.deploy.test_compose import ENV_EXAMPLE, compose_with, environment, interpolate, read_env_file, schema_errors
from tests.deploy.test_k8s import config_data, load_manifests, of_kind, the_container

OVERLAY = DEPLOY / "compose.tls.yaml"
SECRETS_DIR = "/run/secrets/"


def merged(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """compose's merge of a second -f file: mappings merge key by key, ports and secrets add up."""
    result = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        elif isinstance(value, list) and isinstance(result.get(key), list):
            result[key] = result[key] + value
        else:
            result[key] = copy.deepcopy(value)
    return result


def tls_compose(env: dict[str, str]) -> dict[str, Any]:
    overlay = interpolate(yaml.safe_load(OVERLAY.read_text()), env)
    return merged(compose_with(env), overlay)


def test_the_overlay_validates_and_publishes_the_tls_port_beside_the_plain_one() -> None:
    document = tls_compose(read_env_file(ENV_EXAMPLE))
    assert schema_errors(document) == []
    scp = document["services"]["scp"]
    env = environment(scp)
    assert unknown_options(env) == []
    settings = settings_from(env)
    assert settings.tls_port == 2762 and settings.dicom_port == 11112
    assert [(int(port["target"]), port["published"]) for port in scp["ports"]] == [(11112, "11112"), (2762, "2762")]
    assert all("host_ip" not in port for port in scp["ports"]), "modalities reach both ports"
    # Only the scp gets TLS; every other service is as compose.yaml alone has it.
    plain = compose_with(read_env_file(ENV_EXAMPLE))
    for name, service in document["services"].items():
        if name != "scp":
            assert service == plain["services"][name], name
    assert settings_from(environment(plain["services"]["scp"])).tls_port is None, "compose.yaml alone: no TLS"


def test_the_certificate_options_name_the_mounted_secrets(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    tls_dir = tmp_path / "tls"
    tls_dir.mkdir()
    (tls_dir / "server.crt").write_bytes(pki.server.certificate.read_bytes())
    (tls_dir / "server.key").write_bytes(pki.server.private_key.read_bytes())
    (tls_dir / "ca.crt").write_bytes(pki.ca.certificate.read_bytes())
    document = tls_compose({**read_env_file(ENV_EXAMPLE), "DICOM_TLS_DIR": str(tls_dir)})
    scp = document["services"]["scp"]
    secrets = document["secrets"]
    assert sorted(scp["secrets"]) == sorted(secrets)
    # Inside the container a secret is /run/secrets/<name>: map those paths to the files that compose mounts.
    env = environment(scp)
    for option in ("PACS_TLS_CERTIFICATE", "PACS_TLS_PRIVATE_KEY", "PACS_TLS_CA_CERTIFICATES"):
        name = env[option].removeprefix(SECRETS_DIR)
        assert env[option].startswith(SECRETS_DIR) and name in scp["secrets"], option
        env[option] = secrets[name]["file"]
    context = server_context(settings_from(env))  # the files named are the right ones, and usable
    assert context is not None


def test_the_default_certificate_folder_exists_and_keeps_keys_out_of_git() -> None:
    document = tls_compose(read_env_file(ENV_EXAMPLE))
    folders = {Path(secret["file"]).parent for secret in document["secrets"].values()}
    assert folders == {Path("./tls")}
    ignore = (DEPLOY / "tls" / ".gitignore").read_text().split()
    assert "*" in ignore and "!.gitignore" in ignore


def test_k8s_mounts_the_tls_secret_where_the_configmap_points_and_exposes_port_2762() -> None:
    manifests = load_manifests()
    config = config_data(manifests)
    deployment = of_kind(manifests, "Deployment")["pacs-scp"]
    pod = deployment["spec"]["template"]["spec"]
    container = the_container(pod)
    [mount] = [item for item in container["volumeMounts"] if item["name"] == "dicom-tls"]
    assert mount["readOnly"] is True
    [volume] = [item for item in pod["volumes"] if item["name"] == "dicom-tls"]
    assert volume["secret"]["secretName"] == "pacs-dicom-tls"
    assert volume["secret"]["optional"] is True, "the pod starts while TLS is off and the Secret does not exist"
    assert volume["secret"]["defaultMode"] == 0o440 and pod["securityContext"]["fsGroup"] == 10001
    for option, key in (("PACS_TLS_CERTIFICATE", "tls.crt"), ("PACS_TLS_PRIVATE_KEY", "tls.key")):
        assert config[option] == f"{mount['mountPath']}/{key}", option
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    settings = settings_from({**config, "PACS_TLS_PORT": str(ports["dicom-tls"])})  # what turning it on sets
    assert settings.tls_port == 2762 != settings.dicom_port
    assert settings_from(config).tls_port is None, "off until configmap.yaml sets PACS_TLS_PORT"
    service = of_kind(manifests, "Service")["pacs-scp"]
    assert {"name": "dicom-tls", "port": 2762, "targetPort": "dicom-tls", "protocol": "TCP"} in service["spec"]["ports"]
    # Only the scp pods get the certificates.
    for name, other in of_kind(manifests, "Deployment").items():
        if name != "pacs-scp":
            assert all("secret" not in item for item in other["spec"]["template"]["spec"]["volumes"]), name
