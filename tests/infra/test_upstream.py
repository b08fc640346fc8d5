"""What the Pulumi program registers under mocks, held against what the cluster will accept at the pinned
versions (../shared/upstream/): custom resources against their CRDs, Helm values against the charts'
defaults (an unknown key is ignored by Helm: none of these charts has a values.schema.json), values that
only repeat a default, Helm's wait on LoadBalancer Services, and cluster-autoscaler's image."""

from __future__ import annotations

import pytest

from infra import charts
from infra.gateway import kong_values
from infra.nodes import AUTOSCALER_IMAGE_TAGS, autoscaler_image_tag
from mesh.compile.settings import environment_from_config, load_stack
from tests.infra.harness import ROOT, Run, run_program
from tests.upstream import (
    CHART_VALUES,
    NO_VALUES,
    chart_defaults,
    crd_errors,
    is_custom,
    require_upstream,
    values_errors,
    values_repeating_defaults,
)

BUILTIN_GROUPS = {
    "core",
    "apps",
    "policy",
    "networking.k8s.io",
    "rbac.authorization.k8s.io",
    "storage.k8s.io",
    "helm.sh",
}
# Values that follow the stack, not the chart, and may happen to equal a chart version's default: the image
# follows the cluster's minor version, the region follows `aws:region` (us-east-1 is also the chart's default).
PINNED = {("cluster-autoscaler", "image.tag"), ("cluster-autoscaler", "awsRegion")}


@pytest.fixture(scope="module", params=["dev", "prod"])
def run(request: pytest.FixtureRequest) -> Run:
    require_upstream()
    return run_program(request.param)


def test_every_registered_custom_resource_is_what_its_crd_accepts(run: Run) -> None:
    custom = [
        {**r.inputs, "apiVersion": r.type.split(":")[1], "kind": r.kind}
        for r in run.registrations
        if r.type.startswith("kubernetes:") and r.type.split(":")[1].split("/")[0] not in BUILTIN_GROUPS
    ]
    assert len(custom) >= (30 if run.stack == "prod" else 25)
    assert all(is_custom(o) for o in custom)
    assert [e for o in custom for e in crd_errors(o, lenient_numbers=True)] == []


def test_every_helm_values_path_exists_in_the_charts_defaults(run: Run) -> None:
    releases = {r.name: r for r in run.of_kind("Release")}
    pins = {c.chart for c in vars(charts).values() if isinstance(c, charts.Chart)}
    assert set(releases) <= set(CHART_VALUES) | set(NO_VALUES)
    for name, release in releases.items():
        assert release.inputs["chart"] in pins
        values = release.inputs.get("values", {})
        if name in NO_VALUES:
            assert values == {}, name
            continue
        assert values_errors(name, values) == []


def test_no_helm_value_only_repeats_the_charts_default(run: Run) -> None:
    """Values hold what differs from the chart, so the next chart upgrade has less to review."""
    for release in run.of_kind("Release"):
        if release.name in NO_VALUES:
            continue
        repeated = values_repeating_defaults(release.name, release.inputs.get("values", {}))
        repeated = [r for r in repeated if not any(r.startswith(f"{n}: {p} ") for n, p in PINNED)]
        assert repeated == []


def test_the_values_checker_finds_an_unknown_key_and_a_repeated_default() -> None:
    require_upstream()
    assert values_errors("kong", {"gateway": {"proxy": {"tpye": "NodePort"}}}) == [
        "kong: values path gateway.proxy.tpye is not in the chart's defaults"
    ]
    assert values_errors("kps", {"grafana": {"sidecar": {"dashboards": {"labelValu": "1"}}}})
    assert values_errors("istiod", {"meshConfig": {"accessLogFile": "/dev/stdout"}}) == []  # MeshConfig's keys
    assert values_errors("kong", {"gateway": {"podAnnotations": {"anything.io/goes": "x"}}}) == []  # free-form
    assert values_repeating_defaults("kong", {"gateway": {"proxy": {"type": "LoadBalancer"}}})
    assert values_repeating_defaults("kong", {"controller": {"ingressController": {"ingressClass": "kong"}}})
    assert values_repeating_defaults("istiod", {"meshConfig": {"enablePrometheusMerge": True}})


def _proxy_type(values: dict) -> str:
    return values.get("gateway", {}).get("proxy", {}).get("type") or chart_defaults("kong.yaml")["proxy"]["type"]


def test_helm_waits_on_a_load_balancer_only_where_the_cluster_has_one(run: Run) -> None:
    """Helm's --wait counts a LoadBalancer Service ready only with an external address: plain kind never
    gives one, so the dev stack (kubeconfig) uses NodePort; EKS (prod) has load balancers."""
    (release,) = [r for r in run.of_kind("Release") if r.name == "kong"]
    env = load_stack(run.stack, ROOT)
    proxy = _proxy_type(release.inputs["values"])
    assert release.inputs.get("skipAwait") is not True  # the release does wait (atomic, 900 s)
    assert proxy == ("LoadBalancer" if env.cluster.has_load_balancer else "NodePort")
    assert proxy == ("LoadBalancer" if run.stack == "prod" else "NodePort")
    for other in run.of_kind("Release"):
        values = other.inputs.get("values", {})
        assert "LoadBalancer" not in str(values) or env.cluster.has_load_balancer, other.name


def test_a_kubeconfig_cluster_that_says_it_has_load_balancers_gets_one() -> None:
    require_upstream()
    env = environment_from_config({"cluster": {"provider": "kubeconfig", "loadBalancer": True}}, stack="k3d")
    assert _proxy_type(kong_values(env)) == "LoadBalancer"
    env = environment_from_config({"cluster": {"provider": "eks", "loadBalancer": False}}, stack="x")
    assert _proxy_type(kong_values(env)) == "NodePort"


def test_cluster_autoscaler_runs_the_control_planes_minor_version(run: Run) -> None:
    env = load_stack(run.stack, ROOT)
    releases = {r.name: r for r in run.of_kind("Release")}
    if run.stack != "prod":
        assert "cluster-autoscaler" not in releases
        return
    tag = releases["cluster-autoscaler"].inputs["values"]["image"]["tag"]
    assert tag.removeprefix("v").rsplit(".", 1)[0] == env.cluster.version
    # the chart's own default would not have been: 9.43.2 ships 1.31 whatever the cluster runs
    default = chart_defaults("ca.yaml")["image"]["tag"]
    assert default.removeprefix("v").rsplit(".", 1)[0] != env.cluster.version


def test_every_known_autoscaler_tag_matches_its_minor_and_an_unknown_minor_fails_naming_the_table() -> None:
    for minor, tag in AUTOSCALER_IMAGE_TAGS.items():
        assert tag.startswith(f"v{minor}.")
    with pytest.raises(Exception, match="AUTOSCALER_IMAGE_TAGS"):
        autoscaler_image_tag("1.99")


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_grpc_at_the_edge_uses_the_only_kong_listener_that_speaks_http2(stack: str) -> None:
    """Why the gRPC Ingress says `grpcs` alone: the pinned Kong chart's TLS listener has `http2`, its plain one
    does not (gRPC needs HTTP/2), and the program's values change neither."""
    from mesh.compile import kong
    from mesh.spec import load_spec

    env = load_stack(stack, ROOT)
    defaults = chart_defaults("kong.yaml")["proxy"]  # the `gateway` subchart of kong/ingress
    proxy = kong_values(env)["gateway"].get("proxy", {})
    parameters = {
        listener: proxy.get(listener, {}).get("parameters", defaults[listener]["parameters"])
        for listener in ("http", "tls")
    }
    assert defaults["tls"]["enabled"] is True and "tls" not in proxy
    assert "http2" in parameters["tls"] and "http2" not in parameters["http"]
    (grpc,) = [o for o in kong.compile_kong(load_spec(), env) if o["metadata"]["name"] == kong.GRPC_INGRESS]
    assert grpc["metadata"]["annotations"]["konghq.com/protocols"] == "grpcs"
