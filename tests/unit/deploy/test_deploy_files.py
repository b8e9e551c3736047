"""Offline checks of the deployment files: there is no Docker engine and no cluster here, so
every file a user runs (Dockerfile, compose.yml, the kustomize overlays, the gateway config for
each target) is checked against its schema and our own rules before anyone runs it.

- compose.yml: the Compose Specification JSON schema (deploy/schemas/compose-spec.json, taken
  from the check-jsonschema package, see deploy/schemas/README.md) plus the platform's rules.
- Kubernetes: each overlay built by the real kustomize (``kubectl kustomize``) and every
  object validated by kubernetes-validate (bundled OpenAPI schemas, strict: unknown fields fail).
- HAProxy: the config rendered for local, compose and k8s by ``python -m snapshoe.gateway``
  and checked with ``haproxy -c`` in zero-warning mode.
- The image: the Dockerfile installs with ``uv sync --locked --no-dev --no-default-groups``,
  and what that installs is exactly ``uv export`` of the lock; the dev mail sink (its package,
  aiosmtpd) is only in the image's ``mail-sink`` target, which compose and the dev overlay run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from packaging.markers import Marker

from snapshoe.deploy import MissingSecretError, ensure_secrets
from snapshoe.gateway import check_config
from snapshoe.gateway.__main__ import main as gateway_main
from snapshoe.gateway.render import TEMPLATE_SLOTS
from snapshoe.kernel.auth import ensure_dev_keys
from snapshoe.kernel.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = ROOT / "compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"

HTTP_SERVICES = ("users", "products", "orders", "payments", "sandbox_pg", "mail_sink", "web")
SCALABLE = ("users", "products", "orders", "payments")
# Scalable too, but with no database: started after setup, not migrate; Redis is its only store.
STATELESS = ("web",)
# Gateway backends: (settings service name, DNS label), as render.py names them.
GATEWAY_BACKENDS = {
    "users": "users",
    "products": "products",
    "orders": "orders",
    "payments": "payments",
    "sandbox_pg": "sandbox-pg",
    "web": "web",
}
# Backends of their own on a service's servers: the waiting room's streams on products'.
SHARED_BACKENDS = {"products_streams": "products"}
INFRA = ("mysql", "redis", "rabbitmq")
# Third-party images beside the platform, not SnapShoe containers (test_observability_files.py).
OBSERVABILITY = ("prometheus", "grafana", "otel-collector", "jaeger")
# The Kubernetes versions the manifests must validate against: an older supported one and the
# newest kubernetes-validate bundles.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())


@pytest.fixture(autouse=True)
def _no_snapshoe_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings defaults, whatever test environment the session runs in."""
    for key in list(os.environ):
        if key.startswith("SNAPSHOE_"):
            monkeypatch.delenv(key)


def services_with_workers() -> list[str]:
    return [s for s in SCALABLE if importlib.util.find_spec(f"snapshoe.{s}.workers") is not None]


# ---------------------------------------------------------------------------------- compose


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(scope="module")
def compose_schema() -> jsonschema.protocols.Validator:
    schema = json.loads((DEPLOY / "schemas" / "compose-spec.json").read_text())
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    return validator_cls(schema)


def command_of(svc: dict[str, Any]) -> list[str]:
    cmd = svc.get("command", [])
    return cmd.split() if isinstance(cmd, str) else list(cmd)


def role(svc: dict[str, Any]) -> tuple[str, str] | None:
    cmd = command_of(svc)
    if len(cmd) == 3 and cmd[0] == "snapshoe" and cmd[1] in ("serve", "worker"):
        return cmd[1], cmd[2]
    return None


def by_role(compose: dict[str, Any]) -> dict[tuple[str, str], str]:
    found: dict[tuple[str, str], str] = {}
    for name, svc in compose["services"].items():
        r = role(svc)
        if r is not None:
            assert r not in found, f"{r} is run by two services"
            found[r] = name
    return found


def volume(spec: str) -> tuple[str, str, str]:
    """(source, target, mode) of a short-syntax volume, variables at their defaults."""
    parts = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", spec).split(":")
    return parts[0], parts[1], parts[2] if len(parts) > 2 else "rw"


def volumes(svc: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """target -> (source, mode)."""
    return {t: (s, m) for s, t, m in map(volume, svc.get("volumes", []))}


def test_compose_file_is_valid_against_the_compose_spec(
    compose: dict[str, Any], compose_schema: jsonschema.protocols.Validator
) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in compose_schema.iter_errors(compose)]
    assert errors == []


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("services", "orders", "depends_on", "migrate", "condition"), "service_finished"),
        (("services", "mysql", "healthcheck", "interval"), 5),
        (("services", "redis", "restart_policy"), "always"),
    ],
)
def test_the_compose_schema_rejects_broken_files(
    compose: dict[str, Any],
    compose_schema: jsonschema.protocols.Validator,
    path: tuple[str, ...],
    value: object,
) -> None:
    broken = json.loads(json.dumps(compose))
    node = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert list(compose_schema.iter_errors(broken)), f"schema accepted {path} = {value!r}"


def test_compose_runs_every_service_and_worker(compose: dict[str, Any]) -> None:
    roles = by_role(compose)
    for service in HTTP_SERVICES:
        assert ("serve", service) in roles, f"no compose service runs `snapshoe serve {service}`"
    for service in services_with_workers():
        assert ("worker", service) in roles, f"no compose service runs `snapshoe worker {service}`"
    for infra in INFRA:
        assert infra in compose["services"]
    assert compose["services"]["mysql"]["image"].startswith("mysql:8")
    assert compose["services"]["redis"]["image"].startswith("redis:7")
    assert compose["services"]["rabbitmq"]["image"].startswith("rabbitmq:3-management")


def test_one_image_built_once_for_every_snapshoe_container(compose: dict[str, Any]) -> None:
    ours = {
        name: svc
        for name, svc in compose["services"].items()
        if name not in (*INFRA, *OBSERVABILITY, "gateway")
    }
    # The dev mail sink runs its own image: the Dockerfile's mail-sink target.
    sink = ours.pop("mail-sink")
    images = {svc["image"] for svc in ours.values()}
    assert len(images) == 1, images
    builders = [name for name, svc in ours.items() if "build" in svc]
    assert len(builders) == 1, builders
    build = ours[builders[0]]["build"]
    assert (ROOT / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    assert "target" not in build  # the production image: the Dockerfile's last stage
    assert sink["image"] not in images
    assert (ROOT / sink["build"]["context"] / sink["build"]["dockerfile"]).resolve() == DOCKERFILE
    assert sink["build"]["target"] == "mail-sink"
    assert "mail-sink" in dockerfile_stage_names()


def test_infrastructure_is_health_checked_and_waited_for(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in (*INFRA, "gateway"):
        test = services[name]["healthcheck"]["test"]
        assert test[0] in ("CMD", "CMD-SHELL"), name
        assert len(test) > 1, name
    for name, svc in services.items():
        for dep, cond in svc.get("depends_on", {}).items():
            if dep in INFRA:
                assert cond["condition"] == "service_healthy", f"{name} -> {dep}"


def test_one_shot_setup_and_migration_run_before_the_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    migrate = services["migrate"]
    assert command_of(migrate)[:2] == ["sh", "-c"]
    assert "snapshoe migrate" in migrate["command"][2]
    assert "snapshoe seed" in migrate["command"][2]
    assert migrate["depends_on"]["setup"]["condition"] == "service_completed_successfully"
    assert "--target compose" in services["setup"]["command"][2]
    for (verb, service), name in by_role(compose).items():
        deps = services[name]["depends_on"]
        if service in SCALABLE:
            assert deps["migrate"]["condition"] == "service_completed_successfully", name
        else:
            assert deps["setup"]["condition"] == "service_completed_successfully", name
        assert services[name].get("restart") == "unless-stopped", name
        del verb


def test_scalable_services_can_be_scaled(compose: dict[str, Any]) -> None:
    """`docker compose up -d --scale orders=3` needs no fixed name and no fixed host port."""
    for (_verb, service), name in by_role(compose).items():
        svc = compose["services"][name]
        if service in (*SCALABLE, *STATELESS):
            assert "container_name" not in svc, name
            assert "ports" not in svc, name


def test_compose_dns_names_and_ports_match_the_gateway_config(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    """The compose target's server-template lines name compose services that serve the
    backend on the port in the line, and the services' URL settings agree."""
    settings = Settings(data_dir=tmp_path)
    ensure_dev_keys(settings)
    out = tmp_path / "gw" / "haproxy.cfg"
    env = {"SNAPSHOE_JWT_PUBLIC_KEY_FILE": str(settings.public_key_path)}
    with _env(env):
        assert gateway_main(["render", "--target", "compose", "--out", str(out)]) == 0
    templates = re.findall(r"server-template (\S+) 1-\d+ (\S+):(\d+) ", out.read_text())
    assert {t[0] for t in templates} == set(GATEWAY_BACKENDS) | set(SHARED_BACKENDS)
    roles = by_role(compose)
    app_env = compose["x-snapshoe-env"]
    for name, host, port in templates:
        backend = SHARED_BACKENDS.get(name, name)
        assert roles[("serve", backend)] == host, f"{backend} is served by {host}?"
        assert int(port) == Settings().service_port(backend)
        assert app_env[f"SNAPSHOE_{backend.upper()}_URL"] == f"http://{host}:{port}"
    assert app_env["SNAPSHOE_MAIL_SINK_URL"] == f"http://{roles[('serve', 'mail_sink')]}:8025"
    assert app_env["SNAPSHOE_SMTP_HOST"] == roles[("serve", "mail_sink")]


def test_the_gateway_waits_for_the_backends_it_routes_to(compose: dict[str, Any]) -> None:
    """Every always-on backend (not the dev-only sandbox PG) is healthy before the gateway
    takes traffic, the web tier included: it serves every path outside the API."""
    roles = by_role(compose)
    deps = compose["services"]["gateway"]["depends_on"]
    for service in (*SCALABLE, *STATELESS):
        assert deps[roles[("serve", service)]]["condition"] == "service_healthy", service


def test_the_web_tier_calls_the_api_through_the_gateway(compose: dict[str, Any]) -> None:
    """No database, no broker: it starts on setup's secrets and Redis, and reaches the API at
    the gateway's service name and internal port (never a service directly)."""
    services = compose["services"]
    web = services[by_role(compose)[("serve", "web")]]
    assert set(web["depends_on"]) == {"setup", "redis"}
    assert web["depends_on"]["setup"]["condition"] == "service_completed_successfully"
    assert "gateway" not in web["depends_on"]  # the gateway waits for web: no cycle
    port = Settings.model_fields["gateway_port"].default
    assert f"{port}:{port}" in services["gateway"]["ports"]
    assert compose["x-snapshoe-env"]["SNAPSHOE_WEB_API_URL"] == f"http://gateway:{port}"


def test_secrets_come_from_files_not_from_the_compose_file(compose: dict[str, Any]) -> None:
    env = compose["x-snapshoe-env"]
    secret_dir = "/var/lib/snapshoe/secrets/"
    for name in ("INTERNAL_TOKEN", "PG_SECRET_KEY"):
        assert f"SNAPSHOE_{name}" not in env
        assert env[f"SNAPSHOE_{name}_FILE"].startswith(secret_dir)
    for name in ("PRIVATE", "PUBLIC"):
        assert env[f"SNAPSHOE_JWT_{name}_KEY_FILE"].startswith(secret_dir)
    for name, svc in compose["services"].items():
        if role(svc) is not None or name == "migrate":
            assert volumes(svc)[secret_dir.rstrip("/")] == ("secrets", "ro"), name
    assert volumes(compose["services"]["setup"])[secret_dir.rstrip("/")] == ("secrets", "rw")
    setup = compose["services"]["setup"]
    # The entrypoint reads *_FILE before the command runs: setup, which creates the files,
    # must not ask for them (on a first start they do not exist yet).
    entrypoint = (DEPLOY / "entrypoint.sh").read_text()
    names = re.search(r"^for name in (.+); do$", entrypoint, re.M)
    assert names is not None
    for name in names.group(1).split():
        assert not setup["environment"].get(f"SNAPSHOE_{name}_FILE"), name
    assert "python -m snapshoe.deploy secrets --dir /var/lib/snapshoe/secrets" in " ".join(
        command_of(setup)
    )


def test_data_lives_in_named_volumes(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    for name, mount in (
        ("mysql", "/var/lib/mysql"),
        ("redis", "/data"),
        ("rabbitmq", "/var/lib/rabbitmq"),
    ):
        assert volumes(compose["services"][name])[mount][0] in declared, name
    for name, svc in compose["services"].items():
        for source, _mode in volumes(svc).values():
            if not source.startswith((".", "/")):
                assert source in declared, f"{name}: undeclared volume {source}"
            else:
                assert (ROOT / source).exists(), f"{name}: {source} is missing"


def test_the_gateway_is_the_official_haproxy_with_the_rendered_config(
    compose: dict[str, Any],
) -> None:
    gateway = compose["services"]["gateway"]
    assert gateway["image"].startswith("haproxy:2.")
    cfg = command_of(gateway)[command_of(gateway).index("-f") + 1]
    assert f"--out {cfg}" in " ".join(command_of(compose["services"]["setup"]))
    assert volumes(gateway)[str(Path(cfg).parent)] == ("gateway-config", "ro")
    assert volumes(compose["services"]["setup"])[str(Path(cfg).parent)] == ("gateway-config", "rw")
    assert gateway["ports"] == ["8000:8000"]
    assert compose["services"]["mail-sink"]["ports"] == ["127.0.0.1:8025:8025"]


def published(svc: dict[str, Any]) -> list[tuple[str, str]]:
    """(host address, container port) of each published port; "" is every interface."""
    out = []
    for port in svc.get("ports", []):
        if isinstance(port, dict):  # long syntax
            out.append((str(port.get("host_ip", "")), str(port["target"])))
            continue
        parts = str(port).rsplit(":", 2)
        host = parts[0] if len(parts) == 3 else ""
        out.append((host.strip("[]"), parts[-1].split("/")[0]))
    return out


def test_only_the_gateway_is_published_beyond_this_host(compose: dict[str, Any]) -> None:
    """The mail sink serves every verification code, the sandbox PG's private API moves
    money, RabbitMQ's UI and HAProxy's stats leak internals: dev-only ports listen on the
    host's loopback only (issue 12, item 11)."""
    for name, svc in compose["services"].items():
        for host, target in published(svc):
            if name == "gateway" and target == "8000":
                continue
            assert host in ("127.0.0.1", "::1"), f"{name} publishes {target} on {host or '*'}"
    assert published(compose["services"]["mail-sink"]) == [("127.0.0.1", "8025")]


def test_published_port_parsing_sees_every_interface() -> None:
    assert published({"ports": ["8025:8025"]}) == [("", "8025")]
    assert published({"ports": ["127.0.0.1:8025:8025/tcp"]}) == [("127.0.0.1", "8025")]
    assert published({"ports": [{"target": 8404, "published": 8404}]}) == [("", "8404")]


def _compose_app_settings(compose: dict[str, Any], values: dict[str, str]) -> Settings:
    """Settings a compose container gets: x-snapshoe-env with ``values`` for the compose
    variables (their defaults otherwise), *_FILE secrets as setup generates them."""

    def expand(text: str) -> str:
        def var(m: re.Match[str]) -> str:
            return values.get(m.group(1), m.group(3) or "")

        return re.sub(r"\$\{([A-Z_]+)(:-([^}]*)|:\?[^}]*)?\}", var, text)

    env = {k: expand(str(v)) for k, v in compose["x-snapshoe-env"].items()}
    for name in ("INTERNAL_TOKEN", "PG_SECRET_KEY"):  # random files made by `setup`
        assert env.pop(f"SNAPSHOE_{name}_FILE")
        env[f"SNAPSHOE_{name}"] = f"generated-{name.lower()}-0123456789abcdef"
    return Settings(**{k.removeprefix("SNAPSHOE_").lower(): v for k, v in env.items()})


def test_compose_runs_dev_by_default_and_production_refuses_its_dev_passwords(
    compose: dict[str, Any],
) -> None:
    from snapshoe.kernel.settings import secret_problems

    dev = _compose_app_settings(compose, {})
    assert dev.environment == "dev"
    assert secret_problems(dev, "orders") == []
    prod = _compose_app_settings(compose, {"SNAPSHOE_ENVIRONMENT": "production"})
    problems = "\n".join(secret_problems(prod, "orders"))
    assert "SNAPSHOE_DB_PASSWORD" in problems
    assert "SNAPSHOE_AMQP_URL" in problems
    # With the operator's passwords (in .env) and the generated files, every process starts.
    given = _compose_app_settings(
        compose,
        {
            "SNAPSHOE_ENVIRONMENT": "production",
            "SNAPSHOE_DB_PASSWORD": "operator-db",
            "SNAPSHOE_AMQP_PASSWORD": "operator-mq",
        },
    )
    for (verb, service), _name in by_role(compose).items():
        role = service if verb == "serve" else f"{service}-worker"
        assert secret_problems(given, role) == [], role


# ------------------------------------------------------------------------------- the image


def dockerfile_stages() -> list[list[str]]:
    """Logical lines (continuations joined) per stage."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def dockerfile_stage_names() -> list[str]:
    """Each stage's name (``FROM x AS name``), "" for an unnamed one."""
    names = []
    for stage in dockerfile_stages():
        words = stage[0].split()
        names.append(words[3] if len(words) > 3 and words[2].upper() == "AS" else "")
    return names


def lineage_text(index: int) -> str:
    """The lines of a stage and of the stages it is built on, as one text."""
    return "\n".join(line for stage in stage_lineage(index) for line in stage)


def stage_lineage(index: int) -> list[list[str]]:
    """A stage and the earlier stages it is built ``FROM``, the root first."""
    stages, names = dockerfile_stages(), dockerfile_stage_names()
    chain = [stages[index]]
    while (parent := chain[0][0].split()[1]) in names[:index]:
        index = names.index(parent)
        chain.insert(0, stages[index])
    return chain


def test_dockerfile_is_multi_stage_locked_non_root_and_health_checked() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    # The final image: the last stage (the default target) with the stages it builds on.
    lineage = stage_lineage(len(stages) - 1)
    build, final = "\n".join(stages[0]), lineage_text(len(stages) - 1)
    assert "COPY pyproject.toml uv.lock" in build
    syncs = re.findall(r"uv sync ([^\n]*)", build)
    assert syncs
    assert all("--locked" in s and "--no-dev" in s and "--no-default-groups" in s for s in syncs)
    assert "--no-editable" in syncs[-1]
    # No compilers, package installs or uv in the final stage; only the built venv.
    for forbidden in ("apt-get install", "build-essential", "gcc", "pip install", "uv sync"):
        assert forbidden not in final, forbidden
    assert "COPY --from=build /app/.venv /app/.venv" in final
    user = re.findall(r"^USER (\S+)", final, re.M)
    assert user
    assert user[-1].split(":")[0] not in ("0", "root")
    assert re.search(r"^HEALTHCHECK .*CMD", final, re.M)
    assert re.search(r"^ENTRYPOINT ", final, re.M)
    # Both stages start from the same base, so the venv's interpreter links stay valid.
    assert stages[0][0].split()[1] == lineage[0][0].split()[1]


def test_the_production_image_has_no_mail_sink() -> None:
    """The dev mail sink's package is removed before the project is built into the image's
    venv, and its SMTP server (aiosmtpd, the mail-sink group) is not installed; only the
    mail-sink target, built on the same stages, adds both back."""
    stages, names = dockerfile_stages(), dockerfile_stage_names()
    build = stages[0]
    removed = [i for i, line in enumerate(build) if "rm -rf src/snapshoe/mail_sink" in line]
    installs = [i for i, line in enumerate(build) if "--no-editable" in line]
    assert removed
    assert installs
    assert removed[0] <= installs[-1]  # the same RUN (before its uv sync) or an earlier one
    assert not any("--group" in line for line in build)
    final = lineage_text(len(stages) - 1)
    assert "COPY --from=build /app/.venv" in final
    assert "mail_sink" not in final
    sink = stage_lineage(names.index("mail-sink"))
    sink_text = lineage_text(names.index("mail-sink"))
    assert sink[0][0].split()[1] == stages[0][0].split()[1]
    copied = [name for name in names if f"--from={name} /app/.venv" in sink_text]
    assert copied == ["build-mail-sink"]
    sink_build = lineage_text(names.index("build-mail-sink"))
    assert "COPY src/snapshoe/mail_sink" in sink_build
    assert "--group mail-sink" in sink_build
    # The lock agrees: aiosmtpd only in the mail-sink group, which a plain `uv sync` installs.
    runtime = _uv("export", "--frozen", "--no-dev", "--no-default-groups", "--no-hashes")
    with_sink = _uv(
        "export", "--frozen", "--no-dev", "--no-default-groups", "--group", "mail-sink",
        "--no-hashes",
    )  # fmt: skip
    assert "aiosmtpd==" not in runtime
    assert "aiosmtpd==" in with_sink
    assert "aiosmtpd==" in _uv("export", "--frozen", "--no-hashes")


def test_the_image_runs_in_production_unless_told_otherwise(compose: dict[str, Any]) -> None:
    final = lineage_text(len(dockerfile_stages()) - 1)
    assert re.search(r"^ENV .*SNAPSHOE_ENVIRONMENT=production", final, re.M | re.S)
    # compose's dev is a choice it states, for every SnapShoe container.
    assert compose["x-snapshoe-env"]["SNAPSHOE_ENVIRONMENT"] == "${SNAPSHOE_ENVIRONMENT:-dev}"
    for name, svc in compose["services"].items():
        if name not in (*INFRA, *OBSERVABILITY, "gateway"):
            assert "SNAPSHOE_ENVIRONMENT" in svc["environment"], name


def test_every_copied_file_is_in_the_build_context() -> None:
    allowed = [
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    assert (ROOT / ".dockerignore").read_text().splitlines()[2:3] == ["*"]
    for line in (line for stage in dockerfile_stages() for line in stage):
        if not line.startswith("COPY ") or "--from=" in line:
            continue
        sources = [w for w in line.split()[1:-1] if not w.startswith("--")]
        for source in sources:
            assert (ROOT / source).exists(), source
            assert any(source == a or source.startswith(a + "/") for a in allowed), source


def _uv(*args: str, env: dict[str, str] | None = None) -> str:
    uv = shutil.which("uv")
    assert uv is not None, "uv is not on PATH"
    proc = subprocess.run(
        [uv, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, **(env or {})},
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_image_installs_exactly_the_locked_dependencies(tmp_path: Path) -> None:
    """Run the Dockerfile's install step into an empty venv and compare with the lock."""
    _uv("lock", "--check")
    # The Dockerfile's groups: no dev tools, not the dev mail sink's group.
    exported = _uv(
        "export", "--frozen", "--no-dev", "--no-default-groups", "--no-hashes",
        "--no-emit-project",
    )  # fmt: skip
    # Markers (win32-only, older-Python-only packages) evaluated for Linux and this Python,
    # as in the image (the same 3.11 line).
    locked = {
        _norm(m.group(1)): m.group(2)
        for m in re.finditer(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)(?:\s*;\s*(.+))?$", exported, re.M)
        if not m.group(3) or Marker(m.group(3)).evaluate({"sys_platform": "linux"})
    }
    assert {"fastapi", "uvicorn", "sqlalchemy", "asyncmy"} <= set(locked)
    venv = tmp_path / "venv"
    _uv(
        "sync",
        "--locked",
        "--no-dev",
        "--no-default-groups",
        "--no-install-project",
        env={"UV_PROJECT_ENVIRONMENT": str(venv), "VIRTUAL_ENV": ""},
    )
    listed = json.loads(
        _uv("pip", "list", "--python", str(venv / "bin" / "python"), "--format", "json")
    )
    installed = {_norm(p["name"]): p["version"] for p in listed}
    assert installed == locked
    # No dev tool leaks into the image, nor the dev mail sink's SMTP server.
    assert not {"pytest", "mypy", "ruff", "aiosmtpd"} & set(installed)


def test_healthcheck_ports_are_the_settings_defaults() -> None:
    hc = _load_healthcheck()
    defaults = Settings.model_construct()
    for service, port in hc.DEFAULT_PORTS.items():
        assert (
            port
            == Settings.model_fields[
                "mail_sink_http_port" if service == "mail_sink" else f"{service}_port"
            ].default
        )
        assert hc.port_of(service, {}) == defaults.service_port(service)
    assert hc.port_of("orders", {"SNAPSHOE_ORDERS_PORT": "9103"}) == 9103
    assert hc.port_of("mail_sink", {"SNAPSHOE_MAIL_SINK_HTTP_PORT": "9025"}) == 9025


def test_healthcheck_recognises_what_the_container_runs() -> None:
    hc = _load_healthcheck()
    venv = "/app/.venv/bin"
    assert hc.role_of([f"{venv}/python", f"{venv}/snapshoe", "serve", "orders"]) == (
        "serve",
        "orders",
    )
    assert hc.role_of(["python", "-m", "snapshoe.cli", "worker", "payments"]) == (
        "worker",
        "payments",
    )
    assert hc.role_of([f"{venv}/python", f"{venv}/snapshoe", "migrate"]) is None
    assert hc.role_of(["sh", "-c", "snapshoe migrate && snapshoe seed"]) is None


class _Status(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(("status", "code"), [(200, 0), (503, 1)])
def test_healthcheck_asks_the_service(
    monkeypatch: pytest.MonkeyPatch, status: int, code: int
) -> None:
    hc = _load_healthcheck()
    handler = type("H", (_Status,), {"status": status})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setattr(hc, "find_role", lambda: ("serve", "orders"))
        monkeypatch.setenv("SNAPSHOE_ORDERS_PORT", str(server.server_address[1]))
        assert hc.main() == code
        monkeypatch.setattr(hc, "find_role", lambda: ("worker", "orders"))
        assert hc.main() == 0
    finally:
        server.shutdown()
        server.server_close()


def test_healthcheck_fails_when_nothing_listens(monkeypatch: pytest.MonkeyPatch) -> None:
    hc = _load_healthcheck()
    monkeypatch.setattr(hc, "find_role", lambda: ("serve", "users"))
    monkeypatch.setenv("SNAPSHOE_USERS_PORT", "9")  # discard: nothing listens there
    assert hc.main() == 1


def _load_healthcheck() -> Any:
    spec = importlib.util.spec_from_file_location("snapshoe_healthcheck", DEPLOY / "healthcheck.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _entrypoint(env: dict[str, str], *cmd: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SNAPSHOE_")}
    return subprocess.run(
        ["/bin/sh", str(DEPLOY / "entrypoint.sh"), *cmd],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )


def test_entrypoint_reads_secrets_from_files(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret with spaces $HOME `x`\n")
    amqp = tmp_path / "amqp"
    amqp.write_text("amqp://u:p@mq:5672/")
    proc = _entrypoint(
        {"SNAPSHOE_INTERNAL_TOKEN_FILE": str(token), "SNAPSHOE_AMQP_URL_FILE": str(amqp)}, "env"
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "SNAPSHOE_INTERNAL_TOKEN=s3cret with spaces $HOME `x`" in lines
    assert "SNAPSHOE_AMQP_URL=amqp://u:p@mq:5672/" in lines
    assert not [ln for ln in lines if ln.startswith("SNAPSHOE_INTERNAL_TOKEN_FILE=")]


def test_entrypoint_refuses_missing_or_double_secrets(tmp_path: Path) -> None:
    missing = _entrypoint({"SNAPSHOE_PG_SECRET_KEY_FILE": str(tmp_path / "nope")}, "true")
    assert missing.returncode == 1
    assert "not a readable file" in missing.stderr
    f = tmp_path / "pw"
    f.write_text("x")
    both = _entrypoint({"SNAPSHOE_DB_PASSWORD_FILE": str(f), "SNAPSHOE_DB_PASSWORD": "y"}, "true")
    assert both.returncode == 1
    assert "not both" in both.stderr
    # The JWT key paths are settings the app reads itself: left alone.
    keys = _entrypoint({"SNAPSHOE_JWT_PUBLIC_KEY_FILE": "/k.pem"}, "env")
    assert "SNAPSHOE_JWT_PUBLIC_KEY_FILE=/k.pem" in keys.stdout.splitlines()


# ----------------------------------------------------------------- secrets and gateway render


class _env:
    """Set environment variables for a block (Settings() reads them)."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.saved: dict[str, str | None] = {}

    def __enter__(self) -> None:
        for k, v in self.values.items():
            self.saved[k] = os.environ.get(k)
            os.environ[k] = v

    def __exit__(self, *exc: object) -> None:
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_setup_creates_missing_secrets_once(tmp_path: Path) -> None:
    directory = tmp_path / "secrets"
    created = ensure_secrets(Settings(), directory)
    assert sorted(created) == [
        "internal-token",
        "jwt-private.pem",
        "jwt-public.pem",
        "pg-secret-key",
    ]
    before = {p.name: p.read_bytes() for p in directory.iterdir()}
    assert (directory / "pg-secret-key").read_text().startswith("test_sk_")
    assert len((directory / "internal-token").read_text()) >= 32
    for name in ("internal-token", "pg-secret-key", "jwt-private.pem"):
        assert (directory / name).stat().st_mode & 0o077 == 0, name
    assert ensure_secrets(Settings(), directory) == []
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before


def test_setup_never_invents_a_secret_the_operator_should_supply(tmp_path: Path) -> None:
    supplied = tmp_path / "run-secrets" / "jwt-private.pem"
    settings = Settings(
        jwt_private_key_file=supplied, jwt_public_key_file=supplied.with_name("jwt-public.pem")
    )
    with pytest.raises(MissingSecretError):
        ensure_secrets(settings, tmp_path / "generated")
    ensure_dev_keys(settings)  # the operator's files now exist: used, not replaced
    key = supplied.read_bytes()
    assert "jwt-private.pem" not in ensure_secrets(settings, tmp_path / "generated")
    assert supplied.read_bytes() == key


@pytest.mark.parametrize("target", ["local", "compose", "k8s"])
def test_gateway_render_command_writes_a_config_haproxy_accepts(
    tmp_path: Path, target: str
) -> None:
    keys = Settings(data_dir=tmp_path / "keys")
    ensure_dev_keys(keys)
    out = tmp_path / "gateway" / "haproxy.cfg"
    env = {"SNAPSHOE_JWT_PUBLIC_KEY_FILE": str(keys.public_key_path)}
    with _env(env):
        code = gateway_main(["render", "--target", target, "--out", str(out), "--check"])
    assert code == 0
    copy = out.parent / "jwt-public.pem"
    assert copy.read_bytes() == keys.public_key_path.read_bytes()
    assert copy.stat().st_mode & 0o777 == 0o644  # HAProxy runs as another user
    text = out.read_text()
    assert f'jwt_verify("ES256","{copy.resolve() if target == "local" else copy}")' in text
    assert str(keys.public_key_path) not in text
    check_config(out)


def test_gateway_render_command_needs_the_public_key(tmp_path: Path) -> None:
    with _env({"SNAPSHOE_JWT_PUBLIC_KEY_FILE": str(tmp_path / "missing.pem")}):
        assert gateway_main(["render", "--out", str(tmp_path / "x.cfg")]) == 1
    assert not (tmp_path / "x.cfg").exists()


# ---------------------------------------------------------------------------------- Kubernetes


def _kustomize(overlay: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    kustomize = shutil.which("kustomize")
    if kubectl:
        cmd = [kubectl, "kustomize", str(overlay)]
    elif kustomize:
        cmd = [kustomize, "build", str(overlay)]
    else:
        pytest.fail("kustomize is needed (apt-get install kubectl, or a kustomize binary)")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.fixture(scope="module")
def overlays(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """Both overlays built from a copy of deploy/k8s, with fresh dev secrets (the real ones
    are git-ignored and may not exist on this machine)."""
    root = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, root, ignore=shutil.ignore_patterns("*.pem", "*-token", "*-key"))
    ensure_secrets(Settings(), root / "overlays" / "dev" / "secrets")
    return {name: _kustomize(root / "overlays" / name) for name in ("dev", "prod")}


def _named(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


@pytest.mark.parametrize("overlay", ["dev", "prod"])
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_is_valid_kubernetes(
    overlays: dict[str, list[dict[str, Any]]], overlay: str, version: str
) -> None:
    errors = []
    for doc in overlays[overlay]:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message}")
    assert errors == []


def test_strict_validation_rejects_an_unknown_field(
    overlays: dict[str, list[dict[str, Any]]],
) -> None:
    deployment = json.loads(json.dumps(_named(overlays["prod"], "Deployment")["orders"]))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_services_workers_and_probes(
    overlays: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    docs = overlays[overlay]
    deployments = _named(docs, "Deployment")
    served: dict[str, dict[str, Any]] = {}
    workers: set[str] = set()
    for name, dep in deployments.items():
        for c in _containers(dep):
            res = c.get("resources", {})
            assert res.get("requests"), f"{name}/{c['name']}"
            assert res.get("limits"), f"{name}/{c['name']}"
        main = dep["spec"]["template"]["spec"]["containers"][0]
        args = main.get("args", [])
        if args[:2] == ["snapshoe", "serve"]:
            served[args[2]] = dep
            assert main["readinessProbe"]["httpGet"]["path"] == "/readyz", name
            assert main["livenessProbe"]["httpGet"]["path"] == "/healthz", name
            assert main["ports"][0]["containerPort"] == Settings().service_port(args[2])
        elif args[:2] == ["snapshoe", "worker"]:
            workers.add(args[2])
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
    dev_peers = {"sandbox_pg", "mail_sink"} if overlay == "dev" else set()
    expected = {*SCALABLE, *STATELESS} | dev_peers
    assert set(served) == expected
    assert workers == set(services_with_workers())
    assert "gateway" in deployments
    # Every Deployment has a PDB selecting it.
    pdbs = [
        p["spec"]["selector"]["matchLabels"] for p in _named(docs, "PodDisruptionBudget").values()
    ]
    for name, dep in deployments.items():
        if dep["metadata"]["labels"]["app.kubernetes.io/component"] != "dev":
            assert dep["spec"]["selector"]["matchLabels"] in pdbs, name


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_hpas_stay_within_the_gateway_slots(
    overlays: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    hpas = _named(overlays[overlay], "HorizontalPodAutoscaler")
    assert set(hpas) == {"gateway", "orders", "products"}
    for name, hpa in hpas.items():
        assert hpa["spec"]["scaleTargetRef"]["name"] == name
        if name != "gateway":
            assert hpa["spec"]["maxReplicas"] <= TEMPLATE_SLOTS, name


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_the_gateway_finds_pods_through_headless_services(
    overlays: dict[str, list[dict[str, Any]]], overlay: str, tmp_path: Path
) -> None:
    docs = overlays[overlay]
    namespace = _named(docs, "Namespace")
    assert len(namespace) == 1
    ns = next(iter(namespace))
    services = _named(docs, "Service")
    deployments = _named(docs, "Deployment")
    keys = Settings(data_dir=tmp_path)
    ensure_dev_keys(keys)
    out = tmp_path / "gw" / "haproxy.cfg"
    with _env({"SNAPSHOE_JWT_PUBLIC_KEY_FILE": str(keys.public_key_path)}):
        assert (
            gateway_main(["render", "--target", "k8s", "--k8s-namespace", ns, "--out", str(out)])
            == 0
        )
    lines = re.findall(r"server-template (\S+) 1-\d+ (\S+):(\d+) ", out.read_text())
    assert len(lines) == len(GATEWAY_BACKENDS) + len(SHARED_BACKENDS)
    for server, host, port in lines:
        backend = SHARED_BACKENDS.get(server, server)
        name, svc_ns = host.split(".")[:2]
        assert host == f"{name}.{ns}.svc.cluster.local"
        assert svc_ns == ns
        if backend == "sandbox_pg" and overlay == "prod":
            assert name not in services  # no sandbox in prod: /pg answers 503
            continue
        svc = services[name]
        assert svc["spec"]["clusterIP"] == "None", name
        assert svc["spec"]["ports"][0]["port"] == int(port)
        target = [
            d
            for d in deployments.values()
            if d["spec"]["selector"]["matchLabels"] == svc["spec"]["selector"]
        ]
        assert len(target) == 1, name
        assert target[0]["spec"]["template"]["spec"]["containers"][0]["args"] == [
            "snapshoe",
            "serve",
            backend,
        ]
    gw = deployments["gateway"]["spec"]["template"]["spec"]
    render = gw["initContainers"][0]["args"]
    assert render[:4] == ["python", "-m", "snapshoe.gateway", "render"]
    assert render[render.index("--target") + 1] == "k8s"
    assert gw["containers"][0]["image"].startswith("haproxy:2.")


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_the_web_tier_gets_only_the_internal_token_and_the_gateway_address(
    overlays: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    docs = overlays[overlay]
    pod = _named(docs, "Deployment")["web"]["spec"]["template"]["spec"]
    secrets = [v["secret"] for v in pod["volumes"] if "secret" in v]
    assert [[i["key"] for i in s["items"]] for s in secrets] == [["internal-token"]]
    container = pod["containers"][0]
    settings = _pod_settings(docs, container, pod)
    assert settings.internal_token == "operator-internal-token-0123456789"
    # The ConfigMap's other secret files are not mounted: blanked, so the entrypoint skips them.
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    assert env["SNAPSHOE_DB_PASSWORD_FILE"] == ""
    assert env["SNAPSHOE_AMQP_URL_FILE"] == ""
    config = _named(docs, "ConfigMap")[container["envFrom"][0]["configMapRef"]["name"]]
    gateway = _named(docs, "Service")["gateway"]["spec"]["ports"][0]["port"]
    assert config["data"]["SNAPSHOE_WEB_API_URL"] == f"http://gateway:{gateway}"
    assert config["data"]["SNAPSHOE_WEB_URL"] == f"http://web:{Settings().service_port('web')}"


def test_dev_runs_the_infrastructure_and_prod_points_outside(
    overlays: dict[str, list[dict[str, Any]]],
) -> None:
    dev, prod = overlays["dev"], overlays["prod"]
    sets = _named(dev, "StatefulSet")
    assert set(sets) == set(INFRA)
    assert all(s["spec"]["replicas"] == 1 for s in sets.values())
    assert not _named(prod, "StatefulSet")
    prod_services = _named(prod, "Service")
    for name in INFRA:
        assert prod_services[name]["spec"]["type"] == "ExternalName"
    # Both overlays reach them by the same names.
    for docs in (dev, prod):
        cms = [c for n, c in _named(docs, "ConfigMap").items() if n.startswith("snapshoe-config")]
        config = cms[0]
        assert config["data"]["SNAPSHOE_DB_HOST"] == "mysql"
        assert config["data"]["SNAPSHOE_REDIS_URL"].startswith("redis://redis:")
    assert _named(dev, "Secret"), "dev generates its Secret"
    assert not _named(prod, "Secret"), "prod secrets are created out of band, never in git"


def _snapshoe_containers(
    docs: list[dict[str, Any]],
) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(role, container, pod spec) of every container that runs a SnapShoe process."""
    found = []
    for doc in docs:
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        pod = doc["spec"]["template"]["spec"]
        for c in pod["containers"]:
            args = " ".join(c.get("args", []))
            m = re.search(r"snapshoe (serve|worker) (\w+)|snapshoe (migrate)", args)
            if m:
                role = m[3] or (m[2] if m[1] == "serve" else f"{m[2]}-worker")
                found.append((role, c, pod))
    return found


def _pod_settings(
    docs: list[dict[str, Any]], container: dict[str, Any], pod: dict[str, Any]
) -> Settings:
    """The settings a container starts with: its ConfigMap and env, each *_FILE read by the
    entrypoint from the Secret keys the pod really mounts (with operator-chosen values)."""
    env: dict[str, str] = {}
    for ref in container.get("envFrom", []):
        name = ref["configMapRef"]["name"]
        env.update(_named(docs, "ConfigMap")[name]["data"])
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    mounted: set[str] = set()
    for mount in container.get("volumeMounts", []):
        for vol in pod.get("volumes", []):
            if vol["name"] == mount["name"] and "secret" in vol:
                assert not vol["secret"].get("optional"), "the Secret must be required"
                mounted |= {f"{mount['mountPath']}/{i['path']}" for i in vol["secret"]["items"]}
    values = {
        "INTERNAL_TOKEN": "operator-internal-token-0123456789",
        "PG_SECRET_KEY": "live_sk_operator",
        "DB_PASSWORD": "operator-db",
        "AMQP_URL": "amqp://snapshoe:operator-mq@rabbitmq:5672/",
    }
    for name, value in values.items():
        path = env.pop(f"SNAPSHOE_{name}_FILE", None)
        if path is not None and path in mounted:
            env[f"SNAPSHOE_{name}"] = value
    for name in ("PRIVATE", "PUBLIC"):
        path = env.get(f"SNAPSHOE_JWT_{name}_KEY_FILE")
        if path is not None and path not in mounted:
            del env[f"SNAPSHOE_JWT_{name}_KEY_FILE"]
    return Settings(**{k.removeprefix("SNAPSHOE_").lower(): v for k, v in env.items()})


def test_prod_runs_in_production_and_gives_every_process_its_secrets(
    overlays: dict[str, list[dict[str, Any]]],
) -> None:
    """In prod every process checks its secrets at start-up (SNAPSHOE_ENVIRONMENT=production):
    the manifests must hand each one what the check demands, from the required Secret, and
    nothing in the overlay may carry a dev value (issue 12, item 7)."""
    from snapshoe.kernel.settings import PUBLIC_DEV_SECRETS, secret_problems

    prod = overlays["prod"]
    roles = _snapshoe_containers(prod)
    assert {r for r, _c, _p in roles} >= {"users", "payments", "payments-worker", "migrate"}
    for role, container, pod in roles:
        settings = _pod_settings(prod, container, pod)
        assert settings.environment == "production", role
        assert secret_problems(settings, role) == [], role
    text = yaml.safe_dump_all(prod)
    for value in PUBLIC_DEV_SECRETS - {""}:
        assert value not in text, value


def test_dev_overlay_runs_in_dev(overlays: dict[str, list[dict[str, Any]]]) -> None:
    from snapshoe.kernel.settings import secret_problems

    for role, container, pod in _snapshoe_containers(overlays["dev"]):
        settings = _pod_settings(overlays["dev"], container, pod)
        assert settings.environment == "dev", role
        assert secret_problems(settings, role) == []


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_the_migration_job_runs_the_migrations(
    overlays: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    jobs = _named(overlays[overlay], "Job")
    args = jobs["snapshoe-migrate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "snapshoe migrate" in " ".join(args)
    assert ("snapshoe seed" in " ".join(args)) == (overlay == "dev")


def test_dev_mysql_grants_are_the_compose_ones() -> None:
    assert (K8S / "overlays" / "dev" / "grants.sql").read_text() == (
        DEPLOY / "mysql" / "grants.sql"
    ).read_text()


def test_module_runs_without_the_cli() -> None:
    """The containers call these modules directly (`python -m ...`)."""
    for module in ("snapshoe.gateway", "snapshoe.deploy"):
        proc = subprocess.run(
            [sys.executable, "-m", module, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert "usage:" in proc.stdout
