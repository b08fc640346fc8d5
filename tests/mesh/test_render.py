"""`meshserve render` / `meshserve validate`: files that parse and validate, the previous render
replaced, and bad input (spec, stack config, paths) answered with a message and exit status 1."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mesh.compile import compile_all, flatten, logging
from mesh.compile.settings import load_stack
from mesh.render import render_objects, secret_instructions
from mesh.spec import DEFAULT_SPEC_PATH, load_spec
from services.cli import main
from tests.mesh.conftest import REPO_ROOT
from tests.mesh.schemas import has_model, is_builtin, validate


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("render")
    assert main(["render", "--stack", "dev", "-o", str(out)]) == 0
    return out


def test_render_writes_one_valid_file_per_object(rendered: Path) -> None:
    files = sorted(rendered.glob("*.yaml"))
    expected = flatten(compile_all(load_spec(), load_stack("dev", REPO_ROOT)))
    assert len(files) == len(expected)
    documents = [yaml.safe_load(path.read_text()) for path in files]
    assert documents == expected  # file order is apply order
    unchecked = set()
    for document in documents:
        validate(document)
        if not (is_builtin(document) or has_model(document)):
            unchecked.add(document["kind"])
    kinds = {d["kind"] for d in documents}
    assert {"Deployment", "VirtualService", "ScaledObject", "ServiceMonitor", "KongPlugin"} <= kinds
    assert unchecked == {"KongPlugin", "KongConsumer"}  # no published models: see test_compile_kong
    assert files[0].name.startswith("000-core-namespace-")
    assert not any(d["kind"] == "Secret" for d in documents)


def test_dev_stack_settings_reach_the_objects(rendered: Path) -> None:
    deployment = yaml.safe_load(next(rendered.glob("*-deployment-meshserve-digits-v1.yaml")).read_text())
    pod = deployment["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "localhost:5001/meshserve/meshserve:dev"
    assert pod["volumes"][-1] == {
        "name": "models",
        "persistentVolumeClaim": {"claimName": "meshserve-models", "readOnly": True},
    }
    ingress = yaml.safe_load(next(rendered.glob("*-ingress-meshserve-meshserve.yaml")).read_text())
    assert ingress["spec"]["rules"][0]["host"] == "meshserve.127.0.0.1.nip.io"
    grpc = yaml.safe_load(next(rendered.glob("*-ingress-meshserve-meshserve-grpc.yaml")).read_text())
    hosts = [r["host"] for r in grpc["spec"]["rules"]]
    assert hosts == ["digits.meshserve.127.0.0.1.nip.io", "resnet.meshserve.127.0.0.1.nip.io"]
    assert next(rendered.glob("*-service-meshserve-digits-grpc.yaml"))
    assert not list(rendered.glob("*-logging-*"))  # logging is off in the dev stack


def test_rerender_replaces_its_files_and_keeps_others(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stale = tmp_path / "999-core-service-meshserve-gone.yaml"
    stale.write_text("kind: Service\n")
    mine = tmp_path / "kustomization.yaml"
    mine.write_text("resources: []\n")
    assert main(["render", "--stack", "prod", "-o", str(tmp_path)]) == 0
    assert not stale.exists()
    assert mine.read_text() == "resources: []\n"
    out, err = capsys.readouterr()
    assert out.startswith("wrote ")
    assert "kubectl -n meshserve create secret generic meshserve-demo-key" in err  # how, never a value


def referenced_secrets(obj: dict[str, Any]) -> set[tuple[str, str]]:
    """(namespace, name) of every Secret an object points at: env secretKeyRefs, secret volumes, Ingress
    TLS, ECK keystores and file realms, Kong credentials."""
    ns = obj["metadata"].get("namespace", "")
    found: set[tuple[str, str]] = set()

    def walk(value: Any, key: str = "") -> None:
        if isinstance(value, dict):
            if key in ("secretKeyRef", "secretRef") and "name" in value:
                found.add((value.get("namespace", ns), value["name"]))  # KIC configFrom names it
            for k, v in value.items():
                if k == "secretName" and isinstance(v, str):
                    found.add((ns, v))
                walk(v, k)
        elif isinstance(value, list):
            if key == "credentials":
                found.update((ns, name) for name in value)
            for v in value:
                walk(v, key)

    walk(obj)
    return found


def test_every_secret_the_objects_need_is_rendered_or_has_a_command(tmp_path: Path) -> None:
    """Render writes no Secret; for each one an object references it prints a kubectl command."""
    objects = [obj for _, obj in render_objects(DEFAULT_SPEC_PATH, "prod", REPO_ROOT)]
    needed = set().union(*(referenced_secrets(o) for o in objects))
    assert {("meshserve", "meshserve-otlp-headers"), ("logging", "meshserve-apm-keystore")} <= needed
    commands = secret_instructions(DEFAULT_SPEC_PATH, "prod", REPO_ROOT)
    created = set()
    for line in commands:
        words = line.split()
        created.add((words[words.index("-n") + 1], words[words.index("secret") + 2]))
    assert needed <= created, needed - created


def test_one_apm_token_reaches_both_secrets_as_kubectl_creates_them() -> None:
    """The two commands, with the same $APM_TOKEN, give APM Server its keystore entry and the pods the
    header value the compiler's own formatting gives (for a URL-safe token)."""
    commands = secret_instructions(DEFAULT_SPEC_PATH, "prod", REPO_ROOT)
    token = "4f1c0a9e7d2b"
    values = {}
    for line in commands:
        match = re.search(r"create secret generic (\S+) --from-literal=([^=]+)=\"([^\"]*)\"", line)
        if match and "$APM_TOKEN" in match.group(3):
            values[match.group(1)] = (match.group(2), match.group(3).replace("$APM_TOKEN", token))
    assert values == {
        logging.APM_TOKEN_SECRET: (logging.APM_TOKEN_KEY, token),
        logging.OTLP_HEADERS_SECRET: (logging.OTLP_HEADERS_KEY, logging.otlp_headers(token)),
    }


def write_stack(root: Path, text: str) -> None:
    (root / "Pulumi.test.yaml").write_text(text)


@pytest.mark.parametrize(
    ("stack_text", "message"),
    [
        ("config:\n  meshserve:replica: {digits-v1: 2}\n", "meshserve:replica: unknown setting"),
        ("config:\n  meshserve:modelStore: {type: s3}\n", "modelStore.uri (s3://bucket/prefix) is required"),
        ("config:\n  meshserve:platform: {istio: maybe}\n", "meshserve:platform.istio:"),
        ("config: [1, 2\n", "not valid YAML"),
    ],
)
def test_bad_stack_config(tmp_path: Path, capsys: pytest.CaptureFixture[str], stack_text: str, message: str) -> None:
    write_stack(tmp_path, stack_text)
    code = main(["render", "--stack", "test", "--root", str(tmp_path), "-o", str(tmp_path / "out")])
    assert code == 1
    err = capsys.readouterr().err
    assert message in err
    assert not (tmp_path / "out").exists()


def test_unknown_stack(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "--stack", "staging", "--root", str(tmp_path), "-o", str(tmp_path / "o")]) == 1
    assert "no stack file for stack 'staging'" in capsys.readouterr().err


def test_render_refuses_a_bad_spec(spec_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec_copy.write_text(spec_copy.read_text().replace("weights: {1: 90, 2: 10}", "weights: {1: 90, 2: 20}"))
    code = main(["render", "--stack", "dev", "--spec", str(spec_copy), "-o", str(tmp_path / "o")])
    assert code == 1
    assert "models.digits.traffic.weights: weights (v1=90, v2=20) sum to 110" in capsys.readouterr().err


def test_validate_ok_and_bad(spec_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--spec", str(spec_copy), "--stack", "prod"]) == 0
    assert "valid (2 models, 3 versions, 1 pipelines, 1 consumers, 2 SLOs)" in capsys.readouterr().out
    spec_copy.write_text(spec_copy.read_text().replace("per_try_timeout: 500ms", "per_try_timeout: 5s"))
    assert main(["validate", "--spec", str(spec_copy)]) == 1
    err = capsys.readouterr().err
    assert "models.digits.resilience: retries.per_try_timeout (5s) is longer than timeout (2s)" in err


def test_validate_as_a_process_exits_1_on_a_missing_file(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "validate", "--spec", str(tmp_path / "nope.yaml")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "nope.yaml is not a valid mesh spec" in result.stderr
    assert "file not found" in result.stderr
