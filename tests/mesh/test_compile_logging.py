"""mesh/compile/logging.py: ECK objects reference each other consistently; the RBAC and the Secrets
validate; the APM Service the pods send OTLP to is the one ECK creates, with APM Server's token as a
header read from a Secret (never a literal), in a format the OTel SDK sends as `Authorization: Bearer`."""

from __future__ import annotations

import http.server
import threading

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.util.re import parse_env_headers

from mesh.compile import k8s, logging
from mesh.compile.settings import Environment, Platform
from mesh.spec import load_spec
from tests.mesh.schemas import is_builtin, validate_builtin

ENV = Environment()


def test_builtin_objects_validate() -> None:
    objects = logging.compile_logging(ENV)
    for obj in filter(is_builtin, objects):
        validate_builtin(obj)
    validate_builtin(logging.elastic_admin_secret(ENV, "from-pulumi"))
    validate_builtin(logging.apm_token_secret(ENV, "from-pulumi"))
    validate_builtin(logging.otlp_headers_secret("meshserve", logging.otlp_headers("from-pulumi")))


def test_elastic_stack_references() -> None:
    objects = {o["kind"]: o for o in logging.compile_logging(ENV)}
    es = objects["Elasticsearch"]
    assert es["spec"]["auth"] == {"fileRealm": [{"secretName": logging.ADMIN_SECRET}]}
    for kind in ("Kibana", "ApmServer", "Beat"):
        assert objects[kind]["spec"]["elasticsearchRef"] == {"name": es["metadata"]["name"]}
        assert objects[kind]["spec"]["version"] == es["spec"]["version"]
        assert objects[kind]["metadata"]["namespace"] == ENV.logging_namespace
    beat = objects["Beat"]["spec"]
    assert beat["type"] == "filebeat"
    assert (
        beat["daemonSet"]["podTemplate"]["spec"]["serviceAccountName"] == objects["ServiceAccount"]["metadata"]["name"]
    )
    binding = objects["ClusterRoleBinding"]
    assert binding["roleRef"]["name"] == objects["ClusterRole"]["metadata"]["name"]


def test_filebeat_runs_on_every_node_gpu_taint_included() -> None:
    """Filebeat tolerates any taint, so the GPU pool's `nvidia.com/gpu=true:NoSchedule` nodes ship logs too."""
    beat = next(o for o in logging.compile_logging(ENV) if o["kind"] == "Beat")
    tolerations = beat["spec"]["daemonSet"]["podTemplate"]["spec"]["tolerations"]
    gpu_taint = {"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}
    for taint in (gpu_taint, {"key": "anything", "effect": "NoExecute"}):
        assert any(
            t.get("operator") == "Exists"
            and t.get("key") in (None, taint["key"])
            and t.get("effect") in (None, taint["effect"])
            for t in tolerations
        ), taint


def test_pods_send_traces_to_the_apm_service_eck_creates() -> None:
    # ECK names the APM HTTP Service `<ApmServer name>-apm-http`.
    apm = next(o for o in logging.compile_logging(ENV) if o["kind"] == "ApmServer")
    expected = f"http://{apm['metadata']['name']}-apm-http.{ENV.logging_namespace}.svc:8200"
    deployment = next(o for o in k8s.compile_core(load_spec(), ENV) if o["kind"] == "Deployment")
    env_vars = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env_vars["OTEL_EXPORTER_OTLP_ENDPOINT"] == expected


def test_admin_secret_is_basic_auth_with_a_role() -> None:
    secret = logging.elastic_admin_secret(ENV, "from-pulumi")
    assert secret["type"] == "kubernetes.io/basic-auth"
    assert secret["stringData"] == {"username": "meshserve-admin", "password": "from-pulumi", "roles": "superuser"}


def server_env(deployment: dict) -> list[dict]:
    return deployment["spec"]["template"]["spec"]["containers"][0]["env"]


def test_every_pod_reads_the_apm_token_from_the_workload_secret() -> None:
    deployments = [o for o in k8s.compile_core(load_spec(), ENV) if o["kind"] == "Deployment"]
    assert len(deployments) == 6
    for deployment in deployments:
        (headers,) = [e for e in server_env(deployment) if e["name"] == "OTEL_EXPORTER_OTLP_HEADERS"]
        assert headers == {
            "name": "OTEL_EXPORTER_OTLP_HEADERS",
            "valueFrom": {"secretKeyRef": {"name": logging.OTLP_HEADERS_SECRET, "key": logging.OTLP_HEADERS_KEY}},
        }
    secret = logging.otlp_headers_secret("meshserve", "x")
    assert (secret["metadata"]["namespace"], list(secret["stringData"])) == ("meshserve", [logging.OTLP_HEADERS_KEY])
    off = Environment(platform=Platform(logging=False))
    for deployment in (o for o in k8s.compile_core(load_spec(), off) if o["kind"] == "Deployment"):
        assert not {"OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_ENDPOINT"} & {
            e["name"] for e in server_env(deployment)
        }


def test_apm_server_token_comes_from_our_keystore_secret() -> None:
    apm = next(o for o in logging.compile_logging(ENV) if o["kind"] == "ApmServer")["spec"]
    keystore = logging.apm_token_secret(ENV, "from-pulumi")
    assert apm["secureSettings"] == [{"secretName": keystore["metadata"]["name"]}]
    assert keystore["metadata"]["namespace"] == ENV.logging_namespace
    # APM Server 8.x reads `apm-server.auth.secret_token` (the pre-8.0 `apm-server.secret_token` was removed
    # and is ignored: every export would get 401). ECK 2.15 sets the 8.x key to its own generated token;
    # user config overrides the same key, so exactly one token is in force: ours.
    assert int(logging.ELASTIC_VERSION.split(".")[0]) >= 8
    (entry,) = keystore["stringData"]
    assert apm["config"] == {"apm-server.auth.secret_token": "${" + entry + "}"}
    assert "apm-server.secret_token" not in apm["config"]
    assert keystore["metadata"]["name"] != f"{logging.NAME}-apm-token"  # never fight ECK over its Secret


@pytest.mark.parametrize("token", ["4f1c0a9e7d2b", "t0k/en+=with space"])
def test_otlp_headers_parse_strictly_as_a_bearer_token(token: str) -> None:
    assert parse_env_headers(logging.otlp_headers(token), liberal=False) == {"authorization": f"Bearer {token}"}


def test_the_otlp_exporter_sends_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK's OTLP/http exporter, configured by the env var the pods get, authorizes with the token."""
    received: list[str | None] = []

    class Collector(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            received.append(self.headers.get("authorization"))
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            return None

    server = http.server.HTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", logging.otlp_headers("4f1c0a9e7d2b"))
    try:
        exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{server.server_port}/v1/traces", timeout=5)
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        with provider.get_tracer("test").start_as_current_span("traced"):
            pass
        provider.shutdown()
    finally:
        server.shutdown()
        server.server_close()
    assert received == ["Bearer 4f1c0a9e7d2b"]
