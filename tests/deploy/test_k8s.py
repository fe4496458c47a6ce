"""deploy/k8s: every manifest validates against the Kubernetes schemas (kubernetes-validate ships them, so this
runs offline), strictly (an unknown field is an error), for the oldest and the newest release it knows; then the
topology: probes, resources, security contexts, Services, autoscalers, disruption budgets, ConfigMap and Secret.
"""

from __future__ import annotations

import copy
import re
import tomllib
from collections.abc import Iterator
from typing import Any

import kubernetes_validate
import pytest
import yaml

from services.api.routes.health import router as health_router
from services.cli import COMMANDS
from tests.deploy import (
    CREDENTIAL_OPTIONS,
    DEPLOY,
    DEPLOYED_OPTIONS,
    REPO,
    SETTINGS_ENV,
    default_as_text,
    run_probe,
    settings_from,
    unknown_options,
)

K8S = DEPLOY / "k8s"
NAMESPACE = "pacs"
OLDEST_SCHEMA = "1.25"
# name -> the pacs command it runs.
DEPLOYMENTS = {"pacs-scp": "scp", "pacs-indexer": "indexer", "pacs-mover": "mover", "pacs-api": "api"}
WORKERS = ("pacs-indexer", "pacs-mover")  # Celery workers: nothing listens in them
# ConfigMap values that differ from shared/settings.py's defaults, on purpose (each has a comment there).
NOT_DEFAULTS = {"PACS_API_HOST", "PACS_DATA_DIR", "PACS_STORAGE_URL", "PACS_S3_ENDPOINT", "PACS_TLS_CERTIFICATE",
                "PACS_TLS_PRIVATE_KEY"}
RUN_AS = 10001  # the Dockerfile's USER


def kustomization() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return document


def load_manifests() -> list[dict[str, Any]]:
    documents = []
    for resource in kustomization()["resources"]:
        for document in yaml.safe_load_all((K8S / resource).read_text()):
            if document is not None:
                document["x-file"] = resource
                documents.append(document)
    return documents


def without_file(document: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in document.items() if key != "x-file"}


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    return load_manifests()


def of_kind(manifests: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {item["metadata"]["name"]: item for item in manifests if item["kind"] == kind}


def pod_specs(manifests: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for item in manifests:
        if item["kind"] in ("Deployment", "Job"):
            yield item["metadata"]["name"], item["spec"]["template"]["spec"]


def the_container(pod: dict[str, Any]) -> dict[str, Any]:
    [container] = pod["containers"]
    assert not pod.get("initContainers")
    return container


def quantity(text: str | int) -> float:
    """CPU or memory quantity as a number (cores, bytes)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(m|Ki|Mi|Gi|Ti|k|M|G)?", str(text))
    assert match, text
    factor = {None: 1, "m": 0.001, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6,
              "G": 1e9}[match[2]]
    return float(match[1]) * factor


def config_data(manifests: list[dict[str, Any]]) -> dict[str, str]:
    data: dict[str, str] = of_kind(manifests, "ConfigMap")["pacs-config"]["data"]
    return data


def secret_data(manifests: list[dict[str, Any]]) -> dict[str, str]:
    data: dict[str, str] = of_kind(manifests, "Secret")["pacs-secrets"]["stringData"]
    return data


# ---- files and schemas ---------------------------------------------------------------------------------------

def test_the_kustomization_lists_every_manifest_and_sets_namespace_and_image(manifests: list[dict[str, Any]]) -> None:
    kust = kustomization()
    assert kust["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and kust["kind"] == "Kustomization"
    on_disk = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kust["resources"]) == on_disk
    assert len(kust["resources"]) == len(set(kust["resources"]))
    assert kust["namespace"] == NAMESPACE
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert kust["images"] == [{"name": "pacs-node", "newName": "pacs-node", "newTag": version}]
    for name, pod in pod_specs(manifests):
        assert the_container(pod)["image"] == f"pacs-node:{version}", name


@pytest.mark.parametrize("version", [OLDEST_SCHEMA, kubernetes_validate.latest_version()])
def test_every_manifest_validates_strictly_against_the_kubernetes_schema(
    manifests: list[dict[str, Any]], version: str
) -> None:
    assert len(manifests) >= 17
    for manifest in manifests:
        try:
            kubernetes_validate.validate(without_file(manifest), version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{manifest['x-file']}: {manifest['kind']}/{manifest['metadata']['name']}: {exc}")


def test_the_schema_check_catches_mistakes(manifests: list[dict[str, Any]]) -> None:
    deployment = copy.deepcopy(without_file(of_kind(manifests, "Deployment")["pacs-scp"]))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"]["tcpSockett"] = container["readinessProbe"].pop("tcpSocket")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, OLDEST_SCHEMA, strict=True)
    hpa = copy.deepcopy(without_file(of_kind(manifests, "HorizontalPodAutoscaler")["pacs-indexer"]))
    hpa["spec"]["minReplicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(hpa, OLDEST_SCHEMA, strict=True)


def test_everything_lives_in_a_namespace_that_enforces_the_restricted_pod_security_standard(
    manifests: list[dict[str, Any]],
) -> None:
    namespace = of_kind(manifests, "Namespace")[NAMESPACE]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for item in manifests:
        if item["kind"] != "Namespace":
            assert item["metadata"]["namespace"] == NAMESPACE, item["metadata"]["name"]
            assert item["metadata"]["labels"]["app.kubernetes.io/part-of"] == "pacs"


# ---- workloads -------------------------------------------------------------------------------------------------

def test_one_deployment_per_service_running_its_pacs_command(manifests: list[dict[str, Any]]) -> None:
    deployments = of_kind(manifests, "Deployment")
    assert set(deployments) == set(DEPLOYMENTS)
    for name, command in DEPLOYMENTS.items():
        spec = deployments[name]["spec"]
        assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
        assert spec["selector"]["matchLabels"]["app.kubernetes.io/component"] == command
        container = the_container(spec["template"]["spec"])
        assert container["args"] == [command] and command in COMMANDS
        assert "command" not in container, "the image's ENTRYPOINT is pacs"
        assert container["envFrom"] == [{"configMapRef": {"name": "pacs-config"}},
                                        {"secretRef": {"name": "pacs-secrets"}}]
    assert deployments["pacs-scp"]["spec"]["replicas"] == 2
    assert deployments["pacs-scp"]["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_the_migration_job_runs_pacs_migrate_with_the_database_only(manifests: list[dict[str, Any]]) -> None:
    job = of_kind(manifests, "Job")["pacs-migrate"]
    pod = job["spec"]["template"]["spec"]
    container = the_container(pod)
    assert container["args"] == ["migrate"] and "migrate" in COMMANDS
    assert pod["restartPolicy"] in ("OnFailure", "Never")
    assert job["spec"]["backoffLimit"] >= 3
    env = {item["name"]: item["valueFrom"] for item in container["env"]}
    assert set(env) == {"PACS_DATABASE_URL", "PACS_LOG_LEVEL"}
    assert env["PACS_DATABASE_URL"] == {"secretKeyRef": {"name": "pacs-secrets", "key": "PACS_DATABASE_URL"}}
    assert env["PACS_LOG_LEVEL"] == {"configMapKeyRef": {"name": "pacs-config", "key": "PACS_LOG_LEVEL"}}
    assert "envFrom" not in container


def test_every_pod_is_non_root_read_only_without_privileges_and_without_service_links(
    manifests: list[dict[str, Any]],
) -> None:
    config = config_data(manifests)
    for name, pod in pod_specs(manifests):
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] == RUN_AS, name
        assert security["runAsGroup"] == RUN_AS and security["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False, name
        # A Service named pacs-api would inject PACS_API_PORT=tcp://…: an option's name, and an invalid value.
        assert pod["enableServiceLinks"] is False, name
        container = the_container(pod)
        assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                                "capabilities": {"drop": ["ALL"]}}, name
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
        assert set(mounts.values()) <= set(volumes), name
        assert "emptyDir" in volumes[mounts["/tmp"]], f"{name}: /tmp must be writable"
        if name in DEPLOYMENTS:
            assert "emptyDir" in volumes[mounts[config["PACS_DATA_DIR"]]], f"{name}: PACS_DATA_DIR must be writable"
        for volume in volumes.values():
            if name == "pacs-scp" and volume["name"] == "dicom-tls":  # the DICOM TLS certificates (test_tls.py)
                assert set(volume) == {"name", "secret"}
                continue
            assert set(volume) == {"name", "emptyDir"}, f"{name}: only emptyDir volumes"


def test_every_container_has_resource_requests_and_limits(manifests: list[dict[str, Any]]) -> None:
    for name, pod in pod_specs(manifests):
        resources = the_container(pod)["resources"]
        for resource in ("cpu", "memory"):
            request, limit = resources["requests"][resource], resources["limits"][resource]
            assert 0 < quantity(request) <= quantity(limit), f"{name} {resource}: {request} / {limit}"


def test_probes_api_ready_and_alive_over_http_scp_on_the_dicom_port(manifests: list[dict[str, Any]]) -> None:
    config = config_data(manifests)
    deployments = of_kind(manifests, "Deployment")
    routes = {route.path for route in health_router.routes}  # type: ignore[attr-defined]

    api = the_container(deployments["pacs-api"]["spec"]["template"]["spec"])
    ports = {port["name"]: port["containerPort"] for port in api["ports"]}
    assert ports == {"http": int(config["PACS_API_PORT"])}
    assert api["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert api["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert {"/readyz", "/healthz"} <= routes
    # /readyz bounds each dependency check at 5 s: the probe must wait longer than that.
    assert api["readinessProbe"]["timeoutSeconds"] > 5

    scp = the_container(deployments["pacs-scp"]["spec"]["template"]["spec"])
    ports = {port["name"]: port["containerPort"] for port in scp["ports"]}
    assert ports == {"dicom": int(config["PACS_DICOM_PORT"]), "dicom-tls": 2762}  # TLS: tests/deploy/test_tls.py
    assert scp["readinessProbe"]["tcpSocket"] == {"port": "dicom"}
    assert scp["livenessProbe"]["tcpSocket"] == {"port": "dicom"}


@pytest.fixture
def listener() -> Iterator[int]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@pytest.mark.parametrize("worker", WORKERS)
def test_workers_are_ready_when_their_broker_is_reachable_and_have_no_liveness_probe(
    manifests: list[dict[str, Any]], listener: int, worker: str
) -> None:
    import socket

    container = the_container(of_kind(manifests, "Deployment")[worker]["spec"]["template"]["spec"])
    assert "ports" not in container and "livenessProbe" not in container
    command = container["readinessProbe"]["exec"]["command"]
    assert command[:2] == ["python", "-c"]
    assert run_probe(command, {"PACS_BROKER_URL": f"redis://:pw@127.0.0.1:{listener}/0"}).returncode == 0
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    assert run_probe(command, {"PACS_BROKER_URL": f"redis://127.0.0.1:{closed}/0"}).returncode != 0
    # The same check as the compose healthcheck.
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert compose["services"][DEPLOYMENTS[worker]]["healthcheck"]["test"] == ["CMD", *command]


def test_stopping_leaves_time_for_running_work(manifests: list[dict[str, Any]]) -> None:
    grace = settings_from(config_data(manifests)).shutdown_grace_seconds
    deployments = of_kind(manifests, "Deployment")
    for name in ("pacs-scp", "pacs-api"):
        pod = deployments[name]["spec"]["template"]["spec"]
        pre_stop = the_container(pod)["lifecycle"]["preStop"]["exec"]["command"]
        assert pre_stop[0] == "sleep"
        assert pod["terminationGracePeriodSeconds"] > float(pre_stop[1]) + grace, name
    for name in WORKERS:
        assert deployments[name]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 30, name


# ---- Services, autoscalers, disruption budgets ------------------------------------------------------------------

def selected(manifests: list[dict[str, Any]], selector: dict[str, str]) -> list[str]:
    return [name for name, item in of_kind(manifests, "Deployment").items()
            if selector.items() <= item["spec"]["template"]["metadata"]["labels"].items()]


def test_dicom_is_reachable_from_outside_the_cluster_and_the_api_only_inside(manifests: list[dict[str, Any]]) -> None:
    services = of_kind(manifests, "Service")
    assert set(services) == {"pacs-scp", "pacs-api"}
    deployments = of_kind(manifests, "Deployment")
    for name, target_port, port in (("pacs-scp", "dicom", 11112), ("pacs-scp", "dicom-tls", 2762),
                                    ("pacs-api", "http", 8042)):
        spec = services[name]["spec"]
        assert selected(manifests, spec["selector"]) == [name]
        [service_port] = [item for item in spec["ports"] if item["targetPort"] == target_port]
        assert service_port["port"] == port and service_port["name"] == target_port
        container = the_container(deployments[name]["spec"]["template"]["spec"])
        assert target_port in {item["name"] for item in container["ports"]}
    assert len(services["pacs-scp"]["spec"]["ports"]) == 2 and len(services["pacs-api"]["spec"]["ports"]) == 1
    assert services["pacs-scp"]["spec"]["type"] in ("LoadBalancer", "NodePort")
    # The caller's address is kept (remote_ip, IP allowlist).
    assert services["pacs-scp"]["spec"]["externalTrafficPolicy"] == "Local"
    assert services["pacs-api"]["spec"]["type"] == "ClusterIP"


def test_autoscalers_scale_the_indexer_mover_and_scp_deployments_on_cpu(manifests: list[dict[str, Any]]) -> None:
    autoscalers = of_kind(manifests, "HorizontalPodAutoscaler")
    deployments = of_kind(manifests, "Deployment")
    targets = set()
    for name, hpa in autoscalers.items():
        assert hpa["apiVersion"] == "autoscaling/v2"
        spec = hpa["spec"]
        target = spec["scaleTargetRef"]
        assert target["apiVersion"] == "apps/v1" and target["kind"] == "Deployment"
        assert target["name"] in deployments, name
        targets.add(target["name"])
        assert 2 <= spec["minReplicas"] < spec["maxReplicas"], name
        assert deployments[target["name"]]["spec"]["replicas"] == spec["minReplicas"], name
        [metric] = spec["metrics"]
        assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
        # Utilization is relative to the CPU request, so the target's container must have one.
        assert the_container(deployments[target["name"]]["spec"]["template"]["spec"])["resources"]["requests"]["cpu"]
    assert targets == {"pacs-indexer", "pacs-mover", "pacs-scp"}


def test_a_disruption_budget_covers_each_deployment_with_its_own_selector(manifests: list[dict[str, Any]]) -> None:
    budgets = of_kind(manifests, "PodDisruptionBudget")
    deployments = of_kind(manifests, "Deployment")
    covered = []
    for name, budget in budgets.items():
        selector = budget["spec"]["selector"]["matchLabels"]
        [deployment] = selected(manifests, selector)
        assert selector == deployments[deployment]["spec"]["selector"]["matchLabels"], name
        assert budget["spec"].get("maxUnavailable") == 1 or \
            budget["spec"]["minAvailable"] < deployments[deployment]["spec"]["replicas"], name
        covered.append(deployment)
    assert sorted(covered) == sorted(deployments)


# ---- configuration --------------------------------------------------------------------------------------------------

def test_configmap_and_secret_keys_are_options_of_the_node(manifests: list[dict[str, Any]]) -> None:
    config, secret = config_data(manifests), secret_data(manifests)
    assert unknown_options(config) == [] and unknown_options(secret) == []
    assert all(key in SETTINGS_ENV for key in [*config, *secret])
    assert not set(config) & set(secret)
    assert set(secret) == CREDENTIAL_OPTIONS, "credentials in the Secret, everything else in the ConfigMap"
    assert set(config) | set(secret) == DEPLOYED_OPTIONS, \
        f"configmap.yaml does not set {sorted(DEPLOYED_OPTIONS - set(config) - set(secret))}"
    settings = settings_from({**config, **secret})  # every value passes the node's own validation
    assert settings.api_host == "0.0.0.0" and settings.storage_url and settings.storage_url.startswith("s3://")
    for key, value in config.items():
        if key not in NOT_DEFAULTS:
            assert value == default_as_text(SETTINGS_ENV[key]), f"{key}: {value!r} is not the default"


def test_the_secret_is_a_clearly_marked_template(manifests: list[dict[str, Any]]) -> None:
    text = (K8S / "secret.yaml").read_text()
    assert "TEMPLATE WITH EXAMPLE VALUES" in text
    for key, value in secret_data(manifests).items():
        assert "EXAMPLE" in value, f"{key} must be marked as an example value"


def test_every_reference_to_the_configmap_or_secret_names_an_existing_key(manifests: list[dict[str, Any]]) -> None:
    config, secret = config_data(manifests), secret_data(manifests)
    for name, pod in pod_specs(manifests):
        container = the_container(pod)
        for source in container.get("envFrom", []):
            reference = source.get("configMapRef") or source.get("secretRef")
            assert reference["name"] in ("pacs-config", "pacs-secrets"), name
        for item in container.get("env", []):
            assert unknown_options([item["name"]]) == [], name
            ref = item["valueFrom"].get("configMapKeyRef") or item["valueFrom"].get("secretKeyRef")
            keys = config if ref["name"] == "pacs-config" else secret if ref["name"] == "pacs-secrets" else {}
            assert ref["key"] in keys, f"{name}: {ref}"
