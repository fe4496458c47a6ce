"""deploy/compose.yaml, deploy/.env.example and the image (deploy/docker/Dockerfile, /.dockerignore).

The compose file is validated against the official compose-spec JSON schema (as vendored, with its Apache-2.0
license, by the check-jsonschema package) both as written and after compose's variable interpolation with the
values of .env.example; then its topology is asserted service by service.
"""

from __future__ import annotations

import copy
import http.server
import importlib.resources
import json
import re
import shlex
import socket
import threading
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

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

COMPOSE = DEPLOY / "compose.yaml"
ENV_EXAMPLE = DEPLOY / ".env.example"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"

PACS_SERVICES = {"migrate": "migrate", "scp": "scp", "indexer": "indexer", "mover": "mover",
                 "api": "api"}  # service -> command
LONG_RUNNING = ("scp", "indexer", "mover", "api")
WORKERS = ("indexer", "mover")  # Celery workers: nothing listens, scaled with --scale
ALL_SERVICES = {"postgres", "redis", "minio", "minio-init", *PACS_SERVICES}
ONE_SHOT = {"minio-init", "migrate"}
# What each pacs service needs to reach (PACS_S3_* only with an s3:// store, which compose always uses).
STORE_AND_QUEUE = {"PACS_DATABASE_URL", "PACS_BROKER_URL", "PACS_STORAGE_URL", "PACS_S3_ENDPOINT",
                   "PACS_S3_ACCESS_KEY", "PACS_S3_SECRET_KEY"}
NEEDS = {"migrate": {"PACS_DATABASE_URL"}, "scp": STORE_AND_QUEUE, "indexer": STORE_AND_QUEUE,
         "mover": STORE_AND_QUEUE, "api": STORE_AND_QUEUE}
SECRET_VARIABLES = {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD",
                    "PACS_S3_ACCESS_KEY", "PACS_S3_SECRET_KEY", "PACS_API_ADMIN_TOKEN"}


# ---- compose's variable interpolation (compose-spec "Interpolation") ----------------------------------------

class MissingVariable(Exception):
    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name


_REFERENCE = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))")
_BRACED = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|-|:\?|\?|:\+|\+)(?P<arg>.*))?$", re.S)


def references(text: str) -> Iterator[tuple[str, str | None, str]]:
    """(name, operator, argument) of each ${...} or $NAME in a string; $$ is a literal dollar."""
    for match in _REFERENCE.finditer(text):
        if match["escaped"]:
            continue
        if match["named"]:
            yield match["named"], None, ""
            continue
        parsed = _BRACED.match(match["braced"])
        assert parsed, f"not a compose variable reference: ${{{match['braced']}}}"
        assert "$" not in (parsed["arg"] or ""), f"nested interpolation is not used here: {match[0]}"
        yield parsed["name"], parsed["op"], parsed["arg"] or ""


def interpolate_text(text: str, env: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["named"]:
            return env.get(match["named"], "")
        parsed = _BRACED.match(match["braced"])
        assert parsed, match[0]
        name, op, arg = parsed["name"], parsed["op"], parsed["arg"] or ""
        value = env.get(name)
        if op is None:
            return value or ""
        if op == ":-":
            return value if value else arg
        if op == "-":
            return value if value is not None else arg
        if op in (":?", "?"):
            if value is None or (op == ":?" and not value):
                raise MissingVariable(name, arg)
            return value
        if op == ":+":
            return arg if value else ""
        return arg if value is not None else ""

    return _REFERENCE.sub(replace, text)


def interpolate(node: Any, env: Mapping[str, str]) -> Any:
    """Compose interpolates every string value (never a key)."""
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(item, env) for item in node]
    if isinstance(node, str):
        return interpolate_text(node, env)
    return node


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)
    elif isinstance(node, str):
        yield node


def read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, sep, value = stripped.partition("=")
        assert sep and re.fullmatch(r"[A-Z_][A-Z0-9_]*", key), f"{path.name}:{number}: not KEY=VALUE: {line!r}"
        assert key not in values, f"{path.name}:{number}: {key} given twice"
        values[key] = value
    return values


def raw_compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text())  # merges the << keys as compose does
    assert isinstance(document, dict)
    return document


def compose_with(env: Mapping[str, str]) -> dict[str, Any]:
    resolved = interpolate(raw_compose(), env)
    assert isinstance(resolved, dict)
    return resolved


@pytest.fixture(scope="module")
def example_env() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def compose(example_env: dict[str, str]) -> dict[str, Any]:
    return compose_with(example_env)


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def seconds(duration: str) -> float:
    total, units = 0.0, {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(number + unit for number, unit in parts) == duration, duration
    for number, unit in parts:
        total += float(number) * units[unit]
    return total


# ---- schema --------------------------------------------------------------------------------------------------

def compose_spec_validator() -> jsonschema.protocols.Validator:
    vendored = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads((vendored / "compose-spec.json").read_text())
    assert schema["title"] == "Compose Specification"
    assert "Apache License" in (vendored / "licenses" / "LICENSE.compose-spec").read_text()
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema)


def schema_errors(document: Any) -> list[str]:
    return [f"{'/'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}"
            for error in compose_spec_validator().iter_errors(document)]


def test_the_compose_file_validates_against_the_compose_spec_schema_as_written_and_interpolated(
    compose: dict[str, Any],
) -> None:
    assert schema_errors(raw_compose()) == []
    assert schema_errors(compose) == []


@pytest.mark.parametrize("service, path, value, mentioned", [
    ("scp", ["healthcheck", "intervall"], "5s", "intervall"),
    ("api", ["depends_on", "redis", "condition"], "service_ready", "service_ready"),
    ("indexer", ["restart"], ["always"], "restart"),
    ("redis", ["volumez"], ["redis-data:/data"], "volumez"),
])
def test_the_schema_check_catches_mistakes(
    compose: dict[str, Any], service: str, path: list[str], value: Any, mentioned: str
) -> None:
    broken = copy.deepcopy(compose)
    node = broken["services"][service]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    errors = schema_errors(broken)
    assert any(mentioned in error for error in errors), errors


# ---- variables, defaults and secrets -------------------------------------------------------------------------

def test_every_variable_the_compose_file_reads_is_documented_in_env_example_and_vice_versa(
    example_env: dict[str, str],
) -> None:
    used = {name for text in strings(raw_compose()) for name, _, _ in references(text)}
    assert used == set(example_env), (
        f"used but not in .env.example: {sorted(used - set(example_env))}; "
        f"in .env.example but unused: {sorted(set(example_env) - used)}")


def test_env_example_shows_the_defaults_compose_uses(example_env: dict[str, str]) -> None:
    for text in strings(raw_compose()):
        for name, op, argument in references(text):
            if op == ":-":
                assert example_env[name] == argument, f"{name}: .env.example says {example_env[name]!r}, " \
                                                      f"compose.yaml defaults to {argument!r}"


def test_the_node_options_default_to_the_values_of_shared_settings() -> None:
    for text in strings(raw_compose()):
        for name, op, argument in references(text):
            if name in SETTINGS_ENV and op == ":-":
                field = SETTINGS_ENV[name]
                assert getattr(settings_from({name: argument}), field) == getattr(settings_from({}), field), (
                    f"compose.yaml's default for {name} ({argument!r}) is not the one of shared/settings.py "
                    f"({default_as_text(field)!r})")


def test_passwords_and_keys_have_no_default_and_compose_refuses_to_start_without_them(
    example_env: dict[str, str],
) -> None:
    required = {name for text in strings(raw_compose()) for name, op, _ in references(text) if op in (":?", "?")}
    assert required == SECRET_VARIABLES
    for text in strings(raw_compose()):
        for name, op, _ in references(text):
            if name in SECRET_VARIABLES:
                assert op == ":?", f"{name} must be required and non-empty everywhere (${{{name}:?…}}), not {op}"
    with pytest.raises(MissingVariable):
        compose_with({})
    for name in sorted(SECRET_VARIABLES):
        with pytest.raises(MissingVariable) as missing:
            compose_with({key: value for key, value in example_env.items() if key != name})
        assert missing.value.name == name
        with pytest.raises(MissingVariable):
            compose_with({**example_env, name: ""})


def test_no_secret_is_written_in_the_compose_file(example_env: dict[str, str]) -> None:
    text = COMPOSE.read_text()
    for name in SECRET_VARIABLES:
        if re.search(r"PASSWORD|SECRET|TOKEN", name):
            assert "EXAMPLE" in example_env[name], f".env.example must mark {name} as an example value"
            assert example_env[name] not in text
    # Each option that carries a credential takes it from a required variable, in every service that has it.
    for name, service in raw_compose()["services"].items():
        for key in CREDENTIAL_OPTIONS & set(service.get("environment") or {}):
            operators = {op for _, op, _ in references(str(service["environment"][key]))}
            assert ":?" in operators, f"{name}: {key} must get its secret from a required ${{VAR:?…}}"
    # Each credential reaches the services only through its variable: change them all and the URLs follow.
    marked = {**example_env, **{name: f"S3cret{index}" for index, name in enumerate(sorted(SECRET_VARIABLES))}}
    services = compose_with(marked)["services"]
    scp = environment(services["scp"])
    assert f":{marked['POSTGRES_PASSWORD']}@" in scp["PACS_DATABASE_URL"]
    assert f":{marked['REDIS_PASSWORD']}@" in scp["PACS_BROKER_URL"]
    assert scp["PACS_S3_ACCESS_KEY"] == marked["PACS_S3_ACCESS_KEY"]
    assert scp["PACS_S3_SECRET_KEY"] == marked["PACS_S3_SECRET_KEY"]


# ---- topology --------------------------------------------------------------------------------------------------

def test_every_service_is_there_and_each_dependency_has_a_healthcheck(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == ALL_SERVICES
    assert services["postgres"]["image"].startswith("postgres:16")
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["redis"]["image"].startswith("redis:7")
    assert "ping" in " ".join(services["redis"]["healthcheck"]["test"])
    assert services["minio"]["image"].startswith("minio/minio")
    assert services["minio"]["healthcheck"]["test"] == ["CMD", "mc", "ready", "local"]
    assert services["minio-init"]["image"].startswith("minio/mc")
    for name, service in services.items():
        if name not in ONE_SHOT:
            assert "healthcheck" in service, f"{name} has no healthcheck"
            assert service["restart"] == "unless-stopped", name


def test_redis_keeps_an_append_only_file_and_never_evicts_queued_events(compose: dict[str, Any]) -> None:
    command = compose["services"]["redis"]["command"]
    assert command[0] == "redis-server"
    pairs = {command[index]: command[index + 1] for index in range(1, len(command) - 1, 2)}
    assert pairs["--appendonly"] == "yes"
    assert pairs["--maxmemory-policy"] == "noeviction"
    assert pairs["--requirepass"]


def test_start_order_waits_for_healthy_dependencies_and_finished_one_shot_jobs(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for dependency, rule in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits for {dependency}'s health"
            else:
                assert rule["condition"] == "service_completed_successfully", (name, dependency, rule)
                assert dependency in ONE_SHOT and services[dependency]["restart"] == "no", (name, dependency)
    assert services["minio-init"]["depends_on"] == {"minio": {"condition": "service_healthy"}}
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in LONG_RUNNING:
        assert services[name]["depends_on"] == {
            "migrate": {"condition": "service_completed_successfully"},
            "minio-init": {"condition": "service_completed_successfully"},
            "redis": {"condition": "service_healthy"},
        }, name
    for name in ONE_SHOT:
        assert services[name]["restart"] == "no"


def test_each_pacs_service_runs_its_pacs_command_from_the_one_image(compose: dict[str, Any]) -> None:
    services = compose["services"]
    images = {services[name]["image"] for name in PACS_SERVICES}
    assert len(images) == 1
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert images == {f"pacs-node:{version}"}, "the image tag follows the project's version"
    for name, command in PACS_SERVICES.items():
        service = services[name]
        assert service["command"] == [command] and command in COMMANDS, name
        build = service["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
        assert service["user"] == "10001:10001"
        assert service["read_only"] is True
        assert service["tmpfs"] == ["/tmp"]
        assert service["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in service["security_opt"]
        assert "container_name" not in service, name


def test_ports_dicom_on_every_interface_api_on_loopback_nothing_else_published(compose: dict[str, Any]) -> None:
    services = compose["services"]
    published = {name: service["ports"] for name, service in services.items() if service.get("ports")}
    assert set(published) == {"scp", "api"}, "only DICOM and the API are published; workers scale with --scale"
    scp_env, api_env = environment(services["scp"]), environment(services["api"])
    [dicom] = published["scp"]
    assert int(dicom["target"]) == settings_from(scp_env).dicom_port == 11112
    assert dicom["published"] == "11112" and dicom["protocol"] == "tcp" and "host_ip" not in dicom
    [http] = published["api"]
    assert int(http["target"]) == settings_from(api_env).api_port == 8042
    assert http["published"] == "8042" and http["host_ip"] == "127.0.0.1"
    # Inside its container the API must listen on all interfaces for the published port to reach it.
    assert api_env["PACS_API_HOST"] == "0.0.0.0"
    assert scp_env["PACS_DICOM_HOST"] == "0.0.0.0"


def test_named_volumes_hold_every_durable_state(compose: dict[str, Any]) -> None:
    services = compose["services"]
    declared = set(compose["volumes"])
    used: dict[str, set[str]] = {}
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            assert not source.startswith((".", "/")), f"{name}: bind mount {volume}; use a named volume"
            used.setdefault(source, set()).add(f"{name}:{target}")
    assert set(used) == declared
    assert used["postgres-data"] == {"postgres:/var/lib/postgresql/data"}
    assert used["redis-data"] == {"redis:/data"}
    assert used["minio-data"] == {"minio:/data"}
    assert {f"{name}:/var/lib/pacs" for name in LONG_RUNNING} <= used["pacs-state"]
    for name in LONG_RUNNING:
        assert environment(services[name])["PACS_DATA_DIR"] == "/var/lib/pacs"


def test_every_pacs_variable_is_an_option_of_the_node(compose: dict[str, Any], example_env: dict[str, str]) -> None:
    for name, service in compose["services"].items():
        assert unknown_options(environment(service)) == [], f"{name}: not options of shared/settings.py"
    assert unknown_options(example_env) == [], ".env.example: not options of shared/settings.py"
    used = {name for text in strings(raw_compose()) for name, _, _ in references(text)}
    assert unknown_options(used) == []


def test_each_pacs_service_gets_what_it_needs_and_valid_values(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, needs in NEEDS.items():
        env = environment(services[name])
        assert {key for key in needs if env.get(key)} == needs, f"{name} lacks {sorted(needs - set(env))}"
        settings_from(env)  # every value passes the node's own validation
    # migrate gets the database and nothing else it could leak.
    assert set(environment(services["migrate"])) == {"PACS_DATABASE_URL", "PACS_LOG_LEVEL"}
    # The long-running services get every option (new options of shared/settings.py must be added here too).
    for name in LONG_RUNNING:
        missing = DEPLOYED_OPTIONS - set(environment(services[name]))
        assert not missing, f"compose.yaml ({name}) and .env.example do not set {sorted(missing)}"


def test_the_urls_point_at_the_dependencies_with_their_own_credentials(compose: dict[str, Any]) -> None:
    services = compose["services"]
    postgres, redis_command = environment(services["postgres"]), services["redis"]["command"]
    mc = environment(services["minio-init"])
    for name in ("migrate", *LONG_RUNNING):
        database = urlsplit(environment(services[name])["PACS_DATABASE_URL"])
        assert database.scheme == "postgresql+psycopg" and database.hostname == "postgres"
        assert database.port == 5432 and database.path == f"/{postgres['POSTGRES_DB']}"
        assert (database.username, database.password) == (postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"])
    for name in LONG_RUNNING:
        env = environment(services[name])
        broker = urlsplit(env["PACS_BROKER_URL"])
        assert broker.scheme == "redis" and broker.hostname == "redis" and broker.port == 6379
        assert broker.password == redis_command[redis_command.index("--requirepass") + 1]
        assert environment(services["redis"])["REDISCLI_AUTH"] == broker.password
        store = urlsplit(env["PACS_STORAGE_URL"])
        assert store.scheme == "s3" and store.netloc == mc["S3_BUCKET"], "the bucket minio-init creates"
        assert urlsplit(env["PACS_S3_ENDPOINT"]).hostname == "minio"
        # The node's S3 user is the one minio-init creates, not MinIO's administrator.
        assert (env["PACS_S3_ACCESS_KEY"], env["PACS_S3_SECRET_KEY"]) == (mc["PACS_S3_ACCESS_KEY"],
                                                                        mc["PACS_S3_SECRET_KEY"])
        assert env["PACS_S3_ACCESS_KEY"] != mc["MINIO_ROOT_USER"]
        assert not {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"} & set(env)


def test_minio_init_creates_the_bucket_and_the_node_user() -> None:
    script = raw_compose()["services"]["minio-init"]["command"][0]
    assert 'mc mb --ignore-existing "local/${S3_BUCKET}"' in interpolate_text(script, {})
    assert 'mc admin user add local "${PACS_S3_ACCESS_KEY}" "${PACS_S3_SECRET_KEY}"' in interpolate_text(script, {})
    assert raw_compose()["services"]["minio-init"]["entrypoint"] == ["/bin/sh", "-ec"]


def test_stop_grace_periods_leave_time_for_a_clean_stop(compose: dict[str, Any]) -> None:
    services = compose["services"]
    grace = settings_from(environment(services["scp"])).shutdown_grace_seconds
    assert seconds(services["scp"]["stop_grace_period"]) > grace
    for name in WORKERS:
        assert seconds(services[name]["stop_grace_period"]) >= 30, name
    assert seconds(services["api"]["stop_grace_period"]) > 5  # uvicorn's graceful shutdown


# ---- the healthchecks work: run them against local listeners -----------------------------------------------

def healthcheck_argv(service: Mapping[str, Any]) -> list[str]:
    test = service["healthcheck"]["test"]
    assert test[0] == "CMD", "exec form: no shell needed in the image"
    return list(test[1:])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_scp_healthcheck_connects_to_the_dicom_port_of_its_settings(compose: dict[str, Any], listener: int) -> None:
    argv = healthcheck_argv(compose["services"]["scp"])
    assert run_probe(argv, {"PACS_DICOM_PORT": str(listener)}).returncode == 0
    assert run_probe(argv, {"PACS_DICOM_PORT": str(free_port())}).returncode != 0


@pytest.mark.parametrize("worker", WORKERS)
def test_worker_healthchecks_check_the_broker_they_take_work_from(
    compose: dict[str, Any], listener: int, worker: str
) -> None:
    argv = healthcheck_argv(compose["services"][worker])
    up = run_probe(argv, {"PACS_BROKER_URL": f"redis://:secret@127.0.0.1:{listener}/0"})
    assert up.returncode == 0, up.stderr
    assert run_probe(argv, {"PACS_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"}).returncode != 0


def test_api_healthcheck_asks_healthz_on_the_port_of_its_settings(compose: dict[str, Any]) -> None:
    status = {"code": 200}
    paths: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            paths.append(self.path)
            self.send_response(status["code"])
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        argv = healthcheck_argv(compose["services"]["api"])
        env = {"PACS_API_PORT": str(server.server_address[1])}
        assert run_probe(argv, env).returncode == 0
        status["code"] = 503
        assert run_probe(argv, env).returncode != 0
        assert paths == ["/healthz", "/healthz"]
    finally:
        server.shutdown()
        server.server_close()


# ---- the image ---------------------------------------------------------------------------------------------------

def dockerfile_instructions() -> list[tuple[str, str]]:
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, argument = full.partition(" ")
        instructions.append((keyword.upper(), argument.strip()))
    return instructions


def test_the_image_is_python_slim_runs_pacs_as_uid_10001_and_the_command_picks_the_service() -> None:
    instructions = dockerfile_instructions()
    args = dict(argument.split("=", 1) for keyword, argument in instructions if keyword == "ARG")
    assert args["PYTHON_IMAGE"] == "python:3.11-slim"
    stages = [argument.split()[0] for keyword, argument in instructions if keyword == "FROM"]
    assert stages and all(stage == "${PYTHON_IMAGE}" for stage in stages)
    final = instructions[max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM"):]
    values = {keyword: argument for keyword, argument in final}
    assert values["USER"] == "10001:10001"
    assert any("--uid 10001" in argument for keyword, argument in final if keyword == "RUN")
    assert json.loads(values["ENTRYPOINT"]) == ["pacs"]
    command = json.loads(values["CMD"])
    assert command[0] in COMMANDS
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["name"]
    assert any(f"pip install --no-index --find-links=/wheels {project}" in " ".join(argument.split())
               for keyword, argument in final if keyword == "RUN")
    assert "HEALTHCHECK" not in dict(instructions), "probes are defined by compose and k8s per service"
    assert "PACS_DATA_DIR=/var/lib/pacs" in values["ENV"]


def test_the_image_copies_what_the_package_needs_and_the_context_sends_it() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    copied = set()
    for keyword, argument in dockerfile_instructions():
        if keyword == "COPY" and "--from" not in argument:
            *sources, _ = shlex.split(argument)
            copied.update(sources)
    for source in copied:
        assert (REPO / source).exists(), f"COPY {source}: no such file in the repository"
    packages = {pattern.rstrip("*") for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert {"pyproject.toml", pyproject["project"]["readme"], *packages} <= copied
    for package in packages:
        for path in (REPO / package).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                relative = path.relative_to(REPO).as_posix()
                assert not docker_ignores(relative), f".dockerignore keeps {relative} out of the image"
    for kept_out in (".venv/bin/python", ".git/HEAD", "data/index.sqlite3", "tests/conftest.py",
                     "services/__pycache__/cli.cpython-311.pyc", "bench/results.json"):
        assert docker_ignores(kept_out), kept_out


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out, index = "", 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            out, index = out + "(?:.*/)?", index + 3
        elif pattern.startswith("**", index):
            out, index = out + ".*", index + 2
        elif pattern[index] == "*":
            out, index = out + "[^/]*", index + 1
        elif pattern[index] == "?":
            out, index = out + "[^/]", index + 1
        else:
            out, index = out + re.escape(pattern[index]), index + 1
    return re.compile(out + r"\Z")


def docker_ignores(path: str) -> bool:
    """Docker's .dockerignore rules: the last matching pattern wins; a pattern matching a folder covers its files."""
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            rules.append((negated, _pattern_regex(line.lstrip("!").strip("/"))))
    parts = path.split("/")
    prefixes = ["/".join(parts[:length]) for length in range(1, len(parts) + 1)]
    ignored = False
    for negated, regex in rules:
        if any(regex.match(prefix) for prefix in prefixes):
            ignored = not negated
    return ignored


# ---- the README section -------------------------------------------------------------------------------------------

def test_the_readme_explains_deploying_before_the_layout_and_names_files_that_exist() -> None:
    readme = (REPO / "README.md").read_text()
    headings = re.findall(r"^## (.+)$", readme, flags=re.M)
    assert "Deploying" in headings and "Layout" in headings
    assert headings.index("Layout") == headings.index("Deploying") + 1
    section = readme.split("## Deploying", 1)[1].split("## Layout", 1)[0]
    for path in set(re.findall(r"deploy/[\w./@-]*\w", section)) - {"deploy/.env"}:  # .env: the user's copy
        assert (REPO / path).exists(), f"README names {path}, which does not exist"
    for words in ("--scale indexer=", "--scale mover=", "pacs-mover", "kubectl apply -k deploy/k8s", "pg_dump",
                  "pg_restore", "mc mirror"):
        assert words in section, words
