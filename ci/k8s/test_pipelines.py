"""The image recipe and the two pipelines: linted, schema-checked, and consistent with the
workspace (every image is a real binary) and with the manifests (the deployed images are the
ones the pipelines push)."""

import re
import shutil
import subprocess
import tomllib

import pytest
import yaml

from k8s_model import IMAGE_REPOSITORY, PROD, ROOT, SERVERS, Manifests, image_parts, kubectl, render

DOCKERFILE = ROOT / "Dockerfile"
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
AZURE = ROOT / "ci" / "azure-pipelines.yml"
BINARIES = ["book-svc", "borrow-svc", "dashboard-svc", "graphql-gateway", "library"]


def run(*cmd):
    tool = shutil.which(cmd[0])
    if tool is None:
        pytest.fail(f"{cmd[0]} not on PATH: run ci/k8s/check.sh, which installs it")
    result = subprocess.run([tool, *cmd[1:]], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stdout}\n{result.stderr}"
    return result.stdout


# --- linters and schemas ----------------------------------------------------------------------


def test_hadolint_accepts_the_dockerfile():
    run("hadolint", "--failure-threshold", "info", str(DOCKERFILE))


def test_github_workflow_matches_its_schema():
    run("check-jsonschema", "--builtin-schema", "vendor.github-workflows", str(WORKFLOW))


def test_github_workflow_passes_actionlint():
    # actionlint also runs shellcheck (installed beside it) on every `run:` script.
    assert shutil.which("shellcheck"), "shellcheck missing: actionlint would skip the scripts"
    run("actionlint", str(WORKFLOW))


def test_azure_pipeline_matches_its_schema():
    # The azure-pipelines transform resolves `${{ }}` template expressions first; the
    # vendored schema's regexes need the non-unicode regex variant.
    run(
        "check-jsonschema",
        "--builtin-schema", "vendor.azure-pipelines",
        "--data-transform", "azure-pipelines",
        "--regex-variant", "nonunicode",
        str(AZURE),
    )


def test_shellcheck_accepts_the_scripts():
    scripts = sorted(str(p) for p in (ROOT / "ci" / "k8s").glob("*.sh"))
    assert scripts
    run("shellcheck", *scripts)


# --- the image recipe -------------------------------------------------------------------------


def workspace_binaries():
    """binary name -> package name, from the workspace manifests (default bin = package name)."""
    root = tomllib.loads((ROOT / "Cargo.toml").read_text())
    found = {}
    manifests = [ROOT / "Cargo.toml"] + [ROOT / m / "Cargo.toml" for m in root["workspace"]["members"]]
    for manifest in manifests:
        data = tomllib.loads(manifest.read_text())
        if "package" not in data:
            continue
        package = data["package"]["name"]
        bins = [b["name"] for b in data.get("bin", [])]
        if not bins and ((manifest.parent / "src" / "main.rs").exists() or data["package"].get("default-run")):
            bins = [package]
        for b in bins:
            found[b] = package
    return found


def test_every_image_binary_is_a_workspace_binary_of_the_same_package():
    binaries = workspace_binaries()
    for binary in BINARIES:
        assert binaries.get(binary) == binary, f"{binary}: package {binaries.get(binary)} (the Dockerfile uses -p $BIN)"


def test_dockerfile_builds_one_binary_with_a_cached_dependency_layer():
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M | re.I)
    names = [alias for _, alias in stages]
    assert names[:3] == ["chef", "planner", "builder"], names
    assert re.search(r"^ARG RUST_VERSION=1\.95$", text, re.M)
    assert re.search(r"^ARG BIN$", text, re.M)
    cook = text.index("cargo chef cook")
    copy_sources = text.index("COPY . .", cook)
    build = text.index("cargo build --release --locked", copy_sources)
    assert cook < copy_sources < build, "dependencies must be cooked before the sources are copied"
    assert '-p "${BIN}" --bin "${BIN}"' in text[build:build + 200]
    assert "protobuf-compiler" not in text and "PROTOC" not in text, "the build uses protox, not protoc"
    assert "HEALTHCHECK" not in text


def test_runtime_image_is_minimal_and_non_root():
    text = DOCKERFILE.read_text()
    runtime = text[text.rindex("\nFROM "):]
    image = runtime.split()[1]
    assert image.startswith(("gcr.io/distroless/cc", "debian:")) and "latest" not in image, image
    assert re.search(r"^USER 10001:10001$", runtime, re.M)
    assert re.search(r'^ENTRYPOINT \["/', runtime, re.M), "exec-form entrypoint (no shell in the image)"


def test_dockerignore_keeps_build_outputs_data_and_git_out():
    entries = {
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {"target", "data", ".git"} <= entries
    # ... and keeps what the build needs.
    for needed in ("Cargo.toml", "Cargo.lock", "proto", "src", "tests", "platform"):
        assert needed not in entries


# --- the pipelines ----------------------------------------------------------------------------


def workflow():
    # PyYAML reads the key `on` as True.
    data = yaml.safe_load(WORKFLOW.read_text())
    data["on"] = data.pop(True)
    return data


def test_workflow_runs_on_pull_requests_and_on_main():
    on = workflow()["on"]
    assert on["push"]["branches"] == ["main"]
    assert "pull_request" in on


def test_workflow_lints_and_tests_with_postgres_and_rabbitmq():
    jobs = workflow()["jobs"]
    steps = " ".join(s.get("run", "") for job in jobs.values() for s in job.get("steps", []))
    assert "cargo fmt --all -- --check" in steps
    assert re.search(r"cargo clippy .*-- -D warnings", steps)
    assert "ci/test.sh" in steps
    services = jobs["test"]["services"]
    assert {"postgres", "rabbitmq"} <= set(services)
    assert services["postgres"]["ports"] == ["5432:5432"]
    assert "5672:5672" in services["rabbitmq"]["ports"]


def test_pipelines_give_the_tests_the_rabbitmqctl_of_the_broker_container():
    """ci/test.sh, the end-to-end tests and test_binaries.py make RabbitMQ vhosts with rabbitmqctl
    (the bus fault tests cut connections with it). The runners have none and the broker is a
    service container, so each pipeline installs a rabbitmqctl that runs the container's own,
    before ci/test.sh, and leaves TEST_AMQP_URL unset so that ci/test.sh makes the run's vhost."""
    job = workflow()["jobs"]["test"]
    github = [(s.get("run", ""), yaml.safe_dump(s.get("env") or {})) for s in job["steps"]]
    data = yaml.safe_load(AZURE.read_text())
    [azure_job] = [j for stage in data["stages"] if stage["stage"] == "Test" for j in stage["jobs"]]
    azure = [(s.get("script", ""), "") for s in azure_job["steps"]]
    for pipeline, steps, env, container in (
        ("GitHub", github, job.get("env") or {}, "${{ job.services.rabbitmq.id }}"),
        ("Azure", azure, azure_job.get("variables") or {}, "docker ps --quiet --filter publish=5672"),
    ):
        scripts = [script for script, _ in steps]
        [wrapper] = [i for i, script in enumerate(scripts) if "/usr/local/bin/rabbitmqctl" in script]
        script, step_env = steps[wrapper]
        assert "docker exec" in script and "rabbitmqctl await_startup" in script, pipeline
        assert container in script + step_env, f"{pipeline}: the wrapper does not find the container"
        assert wrapper < scripts.index("ci/test.sh"), f"{pipeline}: rabbitmqctl comes after ci/test.sh"
        assert "TEST_AMQP_URL" not in env, f"{pipeline}: TEST_AMQP_URL stops ci/test.sh making a vhost"
    containers = {c["container"]: c for c in data["resources"]["containers"]}
    assert "5672:5672" in containers[azure_job["services"]["rabbitmq"]]["ports"]
    assert "5432:5432" in containers[azure_job["services"]["postgres"]]["ports"]


def test_workflow_pushes_every_binary_tagged_with_the_commit_then_deploys():
    jobs = workflow()["jobs"]
    images = jobs["images"]
    assert "refs/heads/main" in images["if"] and "push" in images["if"]
    assert sorted(images["strategy"]["matrix"]["bin"]) == sorted(BINARIES)
    [build] = [s for s in images["steps"] if s.get("uses", "").startswith("docker/build-push-action")]
    assert build["with"]["push"] is True
    assert "BIN=${{ matrix.bin }}" in build["with"]["build-args"]
    assert build["with"]["tags"].endswith("/${{ matrix.bin }}:${{ github.sha }}")
    deploy = jobs["deploy"]
    assert deploy["needs"] == ["images"]
    script = "\n".join(s.get("run", "") for s in deploy["steps"])
    assert "secrets.KUBE_CONFIG" in yaml.safe_dump(deploy)
    assert 'ci/k8s/release-overlay.sh k8s/overlays/prod "$IMAGE_REGISTRY" "$GITHUB_SHA"' in script
    assert "kubectl apply -k" in script


def test_azure_pipeline_builds_pushes_and_deploys_to_aks_on_commit():
    data = yaml.safe_load(AZURE.read_text())
    assert data["trigger"]["branches"]["include"] == ["main"]
    [binaries] = [p for p in data["parameters"] if p["name"] == "binaries"]
    assert sorted(binaries["default"]) == sorted(BINARIES)
    text = AZURE.read_text()
    assert "--build-arg BIN=${{ bin }}" in text
    assert "command: push" in text
    assert "ci/test.sh" in text
    assert "KubernetesManifest@1" in text and "action: deploy" in text
    assert "ci/k8s/release-overlay.sh k8s/overlays/prod" in text


def test_release_overlay_swaps_only_the_server_images(tmp_path):
    script = ROOT / "ci" / "k8s" / "release-overlay.sh"
    out = tmp_path / "release"
    subprocess.run(
        [str(script), str(PROD), "registry.example.com/team", "0123abcd", str(out)],
        check=True, capture_output=True, text=True,
    )
    rendered = subprocess.run([kubectl(), "kustomize", str(out)], check=True, capture_output=True, text=True).stdout
    released = Manifests([d for d in yaml.safe_load_all(rendered) if d])
    prod = render(PROD)
    for name in SERVERS:
        assert released.server_container(name)["image"] == f"registry.example.com/team/{name}:0123abcd"
    # Nothing else changes.
    def without_images(docs):
        text = yaml.safe_dump_all(docs, sort_keys=True)
        return re.sub(r"image: \S+", "image: X", text)
    assert without_images(released.docs) == without_images(prod.docs)
    for name in SERVERS:
        assert image_parts(prod.server_container(name)["image"])[0] == f"{IMAGE_REPOSITORY}/{name}"


@pytest.mark.parametrize("tag", ["latest", "has space", ""])
def test_release_overlay_refuses_bad_tags(tmp_path, tag):
    script = ROOT / "ci" / "k8s" / "release-overlay.sh"
    result = subprocess.run(
        [str(script), str(PROD), "registry.example.com", tag, str(tmp_path)], capture_output=True, text=True
    )
    assert result.returncode != 0
