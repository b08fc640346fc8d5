"""mesh/compile/logging.py: ECK objects reference each other consistently; the RBAC and the admin
Secret validate; the APM Service the pods send OTLP to is the one ECK creates."""

from __future__ import annotations

from mesh.compile import k8s, logging
from mesh.compile.settings import Environment
from mesh.spec import load_spec
from tests.mesh.schemas import is_builtin, validate_builtin

ENV = Environment()


def test_builtin_objects_validate() -> None:
    objects = logging.compile_logging(ENV)
    for obj in filter(is_builtin, objects):
        validate_builtin(obj)
    validate_builtin(logging.elastic_admin_secret(ENV, "from-pulumi"))


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
