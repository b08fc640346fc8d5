"""`meshserve verify` against the real local stack (gateway, business API, stages, two digits versions,
Prometheus scraping every second, spans in a file): the suite the README runs on a cluster passes here,
and each check that could pass by accident is shown to fail when what it checks is not true."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from loadtests.verify import FAIL, PASS, SKIP, Target, check_split, check_trace, check_versions_ready, run_checks
from mesh.spec import load_spec
from services.local.supervisor import LocalStack
from tests.observability.livestack import needs_prometheus, observed_stack, prometheus_url

MODELS = Path(__file__).resolve().parents[2] / "models"
REPO = MODELS.parent
SPEC = f"""
repository: {MODELS}
models:
  digits:
    versions:
      1: {{replicas: 1}}
      2: {{replicas: 1}}
    traffic: {{weights: {{1: 70, 2: 30}}, stable: 1, header: x-model-version}}
pipelines:
  digits-classify:
    route: /v1/digits:classify
    stages:
      - {{name: preprocess, kind: image-preprocess, params: {{height: 8, width: 8, channels: 1, scale: 1.0}}}}
      - {{name: predict, model: digits}}
      - {{name: postprocess, kind: classification-postprocess, params: {{top_k: 3}}}}
gateway:
  rate_limit: {{second: 500}}
  consumers:
    - username: demo
      api_key: {{env: MESHSERVE_API_KEY, secret: meshserve-demo-key}}
      rate_limit: {{second: 40}}
slos:
  - {{route: /v1/digits:classify, p95_latency: 50ms, p99_latency: 150ms, error_budget: 0.001}}
  - {{route: /v2/models/digits/infer, p95_latency: 25ms, p99_latency: 100ms, error_budget: 0.001}}
"""

pytestmark = needs_prometheus


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    root = tmp_path_factory.mktemp("verify")
    spec = root / "mesh.yaml"
    spec.write_text(SPEC)
    with observed_stack(root / "run", spec) as running:
        yield running


def target(stack: LocalStack, **changes: object) -> Target:
    base = Target(
        gateway=stack.url("gateway"),
        api_key=stack.env["MESHSERVE_API_KEY"],
        prometheus=prometheus_url(stack),
        spec=stack.spec,
        traces_file=stack.run_dir / "spans.jsonl",
        samples=40,
        split_requests=120,
    )
    return dataclasses.replace(base, **changes)


def test_meshserve_verify_passes_against_the_local_stack(stack: LocalStack) -> None:
    """The command users run, as a process, with the local stack's spans file as its traces backend."""
    argv = [sys.executable, "-m", "services.cli", "verify", "--gateway", stack.url("gateway")]
    argv += ["--prometheus", prometheus_url(stack), "--spec", str(stack.spec_path), "--json"]
    argv += ["--traces-file", str(stack.run_dir / "spans.jsonl"), "--samples", "40", "--split-requests", "120"]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "MESHSERVE_API_KEY": stack.env["MESHSERVE_API_KEY"]}
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=280)
    results = {c["name"]: c for c in orjson.loads(done.stdout or "[]")}
    assert done.returncode == 0, done.stdout + done.stderr
    assert set(results) == {
        "no API key -> 401",
        "held-out digits",
        "version pin",
        "version split",
        "versions ready, providers",
        "trace in the backend",
        "SLO series in Prometheus",
        "past the rate -> 429",
    }
    assert {name for name, c in results.items() if c["status"] != PASS} == set(), results
    assert "digits v1 on CPU" in results["versions ready, providers"]["detail"]
    assert "found in" in results["trace in the backend"]["detail"]


def test_without_a_traces_backend_the_trace_check_is_skipped_and_says_why(stack: LocalStack) -> None:
    (result,) = [c for c in asyncio.run(_one(check_trace, target(stack, traces_file=None)))]
    assert result.status == SKIP and "no traces backend configured" in result.detail


def test_a_split_other_than_the_configured_one_fails(stack: LocalStack) -> None:
    document = stack.spec.model_dump(mode="json")
    document["models"]["digits"]["traffic"]["weights"] = {"1": 100, "2": 0}
    claimed = load_spec_from(document, stack)
    (result,) = asyncio.run(_one(check_split, target(stack, spec=claimed)))
    assert result.status == FAIL and "split v2: want 0%" in result.detail


def test_a_gpu_version_on_the_cpu_fails_unless_the_cpu_is_allowed(stack: LocalStack) -> None:
    document = stack.spec.model_dump(mode="json")
    document["models"]["digits"]["versions"]["2"]["device"] = "gpu"
    claimed = load_spec_from(document, stack)
    (result,) = asyncio.run(_one(check_versions_ready, target(stack, spec=claimed)))
    assert result.status == FAIL and "digits v2: device gpu but runs on ['CPUExecutionProvider']" in result.detail
    (allowed,) = asyncio.run(_one(check_versions_ready, target(stack, spec=claimed, allow_cpu_fallback=True)))
    assert allowed.status == PASS


def test_a_wrong_key_fails_the_suite(stack: LocalStack) -> None:
    results = {c.name: c for c in asyncio.run(_run_some(target(stack, api_key="not-the-key", samples=5)))}
    assert results["held-out digits"].status == FAIL and "401" in results["held-out digits"].detail


async def _one(check, t: Target):
    import httpx

    async with httpx.AsyncClient(timeout=10) as client:
        return [await check(client, t)]


async def _run_some(t: Target):
    from loadtests import verify

    saved = verify.CHECKS
    verify.CHECKS = (verify.check_labels,)
    try:
        return await run_checks(t)
    finally:
        verify.CHECKS = saved


def load_spec_from(document: dict, stack: LocalStack):
    path = stack.run_dir / "claimed.yaml"
    import yaml

    document["repository"] = str(MODELS)
    path.write_text(yaml.safe_dump(document))
    return load_spec(path, check_repository=False)


def test_the_elasticsearch_trace_lookup_asks_apms_data_streams_for_the_trace_id(tmp_path: Path) -> None:
    """No Elasticsearch runs here: a loopback HTTP server records the request the cluster's would get
    (index pattern, ECS field, basic auth) and answers the way ES does for one hit."""
    import base64
    import http.server
    import json
    import threading

    from loadtests.verify import _trace_in_elasticsearch

    seen: list[tuple[str, dict, str | None]] = []

    class Search(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            seen.append((self.path, body, self.headers.get("authorization")))
            hits = 1 if body["query"]["term"]["trace.id"] == "ab" * 16 else 0
            payload = json.dumps({"hits": {"total": {"value": hits, "relation": "eq"}, "hits": []}}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Search)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        es = f"http://127.0.0.1:{server.server_address[1]}"
        t = Target(gateway="", api_key="", prometheus=None, spec=None, elasticsearch=es, elastic_auth=("u", "p"))
        assert asyncio.run(_trace_in_elasticsearch(t, "ab" * 16)) is True
        assert asyncio.run(_trace_in_elasticsearch(t, "cd" * 16)) is False
    finally:
        server.shutdown()
    path, body, auth = seen[0]
    assert path == "/traces-apm*/_search"
    assert body == {"query": {"term": {"trace.id": "ab" * 16}}, "size": 1}
    assert auth == "Basic " + base64.b64encode(b"u:p").decode()


def test_a_stacks_replica_overrides_decide_which_versions_are_checked() -> None:
    """dev sets `resnet-v1: 0`: `--stack dev` must not expect a resnet pod there (the spec alone would)."""
    from loadtests.verify import _served_versions
    from mesh.compile.names import effective_weights, version_replicas
    from mesh.compile.settings import load_stack
    from mesh.spec import DEFAULT_SPEC_PATH

    spec = load_spec(DEFAULT_SPEC_PATH)
    env = load_stack("dev", REPO)
    plain = Target(gateway="", api_key="", prometheus=None, spec=spec)
    assert _served_versions(plain, "resnet") == [1]
    staged = dataclasses.replace(
        plain,
        replicas={m: version_replicas(m, spec, env) for m in spec.models},
        weights={m: effective_weights(m, spec, env) for m in spec.models},
    )
    assert _served_versions(staged, "resnet") == [] and _served_versions(staged, "digits") == [1, 2]
