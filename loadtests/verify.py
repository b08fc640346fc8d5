"""`meshserve verify`: does a running environment work? One suite of end-to-end checks, the same against
the local stack (the tests run it there) and against a cluster after `pulumi up` (through a port-forward
or the gateway's address), from the same spec:

- the business route labels held-out digits right (accuracy over a sample, PNG inputs);
- no API key -> 401; a request past the consumer's rate -> 429 (skipped, saying so, when this client
  cannot send faster than the limit);
- the configured version split is observed within a binomial tolerance (loadtests/canary_split.py);
- the override header pins each served version;
- every served model version is ready and reports what it really runs on (`device: gpu` versions on a
  GPU provider, CUDA/TensorRT);
- each SLO's SLI series exists in Prometheus (mesh/compile/promql.py names them);
- a trace id that went through the gateway is found in the traces backend: a local spans file, or
  Elasticsearch (APM's `traces-apm*`); skipped, saying so, when none is configured.

Each check is PASS, FAIL or SKIP with what it saw; the exit code is 1 when any check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import secrets
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "ROCMExecutionProvider")


@dataclass
class Check:
    name: str
    status: str
    detail: str


@dataclass
class Target:
    """A running environment and how to reach it; `spec` is the MeshSpec it was deployed from."""

    gateway: str
    api_key: str
    prometheus: str | None
    spec: Any
    consumer: str | None = None
    traces_file: Path | None = None
    elasticsearch: str | None = None
    elastic_auth: tuple[str, str] | None = None
    elastic_ca: Path | None = None  # ECK's self-signed HTTP CA (secret <name>-es-http-certs-public, ca.crt)
    samples: int = 60
    split_requests: int = 200
    min_accuracy: float = 0.9
    allow_cpu_fallback: bool = False  # the local stack: no GPU, `device: gpu` versions run on the CPU
    series_wait: float = 60.0
    trace_wait: float = 30.0
    timeout: float = 10.0
    # A stack's replica overrides (Pulumi.<stack>.yaml `replicas`, e.g. dev's `resnet-v1: 0`): which versions
    # run there and the weights the cluster routes by; None = the spec's own.
    replicas: dict[str, dict[int, int]] | None = None
    weights: dict[str, dict[int, int]] | None = None
    sent_trace_ids: list[str] = field(default_factory=list)

    @property
    def key_header(self) -> str:
        return self.spec.gateway.key_names[0]

    def headers(self, **extra: str) -> dict[str, str]:
        return {self.key_header: self.api_key, **extra}

    def rate_limit(self) -> dict[str, int]:
        gateway = self.spec.gateway
        consumers = [c for c in gateway.consumers if self.consumer in (None, c.username)]
        own = consumers[0].rate_limit if consumers else None
        return (own or gateway.rate_limit).windows()


# --------------------------------------------------------------------------- inputs


def held_out_digits(count: int) -> list[tuple[bytes, int]]:
    """(PNG body, true label) of the first `count` held-out digits (the split the models were measured on)."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    # models/digits_data.py's split: test_size 0.25, random_state 0, stratified.
    _, x_test, _, y_test = train_test_split(
        digits.images, digits.target, test_size=0.25, random_state=0, stratify=digits.target
    )
    out = []
    for image, label in zip(x_test[:count], y_test[:count], strict=True):
        pixels = np.clip(np.rint(image / 16.0 * 255.0), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
        out.append((buffer.getvalue(), int(label)))
    return out


def _pipeline(target: Target) -> tuple[str, str]:
    """(route, model) of the first pipeline: the business route the checks drive."""
    pipeline = next(iter(target.spec.pipelines.values()))
    return pipeline.route, str(pipeline.model_stage().model)


def _served_versions(target: Target, model: str) -> list[int]:
    if target.replicas is not None:
        return [v for v, n in target.replicas[model].items() if n > 0]
    return [v for v, vs in target.spec.models[model].versions.items() if vs.replicas > 0]


def _trace_header() -> tuple[str, str]:
    trace_id = secrets.token_hex(16)
    return trace_id, f"00-{trace_id}-{secrets.token_hex(8)}-01"


async def _classify(client: httpx.AsyncClient, target: Target, body: bytes, **extra: str) -> tuple[httpx.Response, str]:
    """One business request carrying a fresh trace context (the gateway continues a caller's trace)."""
    route, _ = _pipeline(target)
    trace_id, traceparent = _trace_header()
    headers = target.headers(**{"content-type": "image/png", "traceparent": traceparent, **extra})
    reply = await client.post(target.gateway + route, content=body, headers=headers)
    returned = reply.headers.get("traceparent", "").split("-")
    if len(returned) == 4 and len(returned[1]) == 32:
        trace_id = returned[1]
    if reply.status_code == 200:
        target.sent_trace_ids.append(trace_id)
    return reply, trace_id


async def _paced(n: int, rate: float, concurrency: int, one: Callable[[int], Awaitable[Any]]) -> list[Any]:
    """`n` calls of `one(i)`, at most `concurrency` at a time and `rate` starts per second."""
    limit = asyncio.Semaphore(concurrency)
    start = time.monotonic()

    async def run(i: int) -> Any:
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        async with limit:
            return await one(i)

    return await asyncio.gather(*(run(i) for i in range(n)))


def _safe_rate(target: Target) -> float:
    """Requests per second that stay well under the consumer's tightest window."""
    seconds = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
    per_second = min(limit / seconds[w] for w, limit in target.rate_limit().items())
    return max(1.0, min(200.0, 0.6 * per_second))


# --------------------------------------------------------------------------- checks


async def check_labels(client: httpx.AsyncClient, target: Target) -> Check:
    samples = held_out_digits(target.samples)

    async def one(i: int) -> tuple[int, Any]:
        reply, _ = await _classify(client, target, samples[i][0])
        return reply.status_code, (reply.json() if reply.status_code == 200 else reply.text[:200])

    replies = await _paced(len(samples), _safe_rate(target), 8, one)
    failed = [(code, body) for code, body in replies if code != 200]
    if failed:
        return Check("held-out digits", FAIL, f"{len(failed)}/{len(samples)} not 200, e.g. {failed[0]}")
    right = sum(int(body["label"]) == label for (_, body), (_, label) in zip(replies, samples, strict=True))
    accuracy = right / len(samples)
    status = PASS if accuracy >= target.min_accuracy else FAIL
    return Check("held-out digits", status, f"accuracy {accuracy:.3f} over {len(samples)} (min {target.min_accuracy})")


async def check_no_key(client: httpx.AsyncClient, target: Target) -> Check:
    route, _ = _pipeline(target)
    reply = await client.post(target.gateway + route, content=b"{}", headers={"content-type": "image/png"})
    status = PASS if reply.status_code == 401 else FAIL
    return Check("no API key -> 401", status, f"answered {reply.status_code}")


async def check_split(client: httpx.AsyncClient, target: Target) -> Check:
    from loadtests.canary_split import split_verdicts

    _, model = _pipeline(target)
    weights = target.weights[model] if target.weights is not None else target.spec.models[model].weights()
    body = held_out_digits(1)[0][0]

    async def one(_: int) -> str | int:
        for _attempt in range(3):  # a 429 says this client outran its rate: wait as told, then again
            reply, _ = await _classify(client, target, body)
            if reply.status_code != 429:
                break
            wait = reply.headers.get("retry-after", "1")
            await asyncio.sleep(min(float(wait), 5.0) if wait.replace(".", "", 1).isdigit() else 1.0)
        return reply.headers.get("x-model-version", "") if reply.status_code == 200 else reply.status_code

    seen = await _paced(target.split_requests, _safe_rate(target), 8, one)
    failed = Counter(s for s in seen if isinstance(s, int))
    if failed:
        codes = ", ".join(f"{n} x {code}" for code, n in sorted(failed.items()))
        return Check("version split", FAIL, f"{sum(failed.values())}/{len(seen)} requests failed ({codes})")
    counts = Counter(str(v).removeprefix("v") for v in seen)
    verdicts = split_verdicts(counts, weights)
    detail = "; ".join(f"{v.check}: want {v.bound}, saw {v.observed}" for v in verdicts)
    return Check("version split", PASS if all(v.passed for v in verdicts) else FAIL, detail)


async def check_pins(client: httpx.AsyncClient, target: Target) -> Check:
    _, model = _pipeline(target)
    traffic = target.spec.models[model].traffic
    header = traffic.header if traffic else "x-model-version"
    body = held_out_digits(1)[0][0]
    wrong = []
    versions = _served_versions(target, model)
    for version in versions:
        for _ in range(5):
            reply, _ = await _classify(client, target, body, **{header: f"v{version}"})
            got = reply.headers.get("x-model-version", "").removeprefix("v")
            if reply.status_code != 200 or got != str(version):
                wrong.append(f"v{version} -> {reply.status_code} x-model-version={got or '-'}")
    detail = f"{header} pinned {', '.join(f'v{v}' for v in versions)} 5 times each"
    return Check("version pin", FAIL if wrong else PASS, "; ".join(wrong) if wrong else detail)


async def check_versions_ready(client: httpx.AsyncClient, target: Target) -> Check:
    problems, seen = [], []
    for model, mspec in target.spec.models.items():
        header = mspec.traffic.header if mspec.traffic else "x-model-version"
        for version in _served_versions(target, model):
            base = f"{target.gateway}/v2/models/{model}/versions/{version}"
            headers = target.headers(**{header: f"v{version}"})
            ready = await client.get(f"{base}/ready", headers=headers)
            meta = await client.get(base, headers=headers)
            if ready.status_code != 200 or meta.status_code != 200:
                problems.append(f"{model} v{version}: ready {ready.status_code}, metadata {meta.status_code}")
                continue
            providers = meta.json().get("parameters", {}).get("execution_providers", [])
            seen.append(f"{model} v{version} on {','.join(p.removesuffix('ExecutionProvider') for p in providers)}")
            wants_gpu = mspec.versions[version].device == "gpu"
            on_gpu = any(p in GPU_PROVIDERS for p in providers)
            if wants_gpu and not on_gpu and not (target.allow_cpu_fallback or mspec.versions[version].cpu_fallback):
                problems.append(f"{model} v{version}: device gpu but runs on {providers}")
            if not providers:
                problems.append(f"{model} v{version}: no execution_providers in its metadata")
    return Check("versions ready, providers", FAIL if problems else PASS, "; ".join(problems or seen))


async def check_slo_series(client: httpx.AsyncClient, target: Target) -> Check:
    from mesh.compile.promql import route_sli

    if not target.prometheus:
        return Check("SLO series in Prometheus", SKIP, "no --prometheus URL given")
    wanted = {slo.route: route_sli(target.spec, slo.route) for slo in target.spec.slos}
    missing = dict(wanted)
    deadline = time.monotonic() + target.series_wait
    while missing:
        for route, sli in list(missing.items()):
            expr = f"{sli.requests}{{{sli.selector}}}"
            reply = await client.get(f"{target.prometheus}/api/v1/query", params={"query": expr})
            if reply.status_code == 200 and reply.json()["data"]["result"]:
                del missing[route]
        if not missing or time.monotonic() > deadline:
            break
        await asyncio.sleep(1.0)
    if missing:
        names = ", ".join(f"{r} ({s.requests}{{{s.selector}}})" for r, s in missing.items())
        return Check("SLO series in Prometheus", FAIL, f"no series within {target.series_wait:.0f}s: {names}")
    return Check("SLO series in Prometheus", PASS, f"{len(wanted)} SLO routes: {', '.join(wanted)}")


async def _trace_in_file(path: Path, trace_id: str) -> bool:
    return path.is_file() and f"0x{trace_id}" in path.read_text(errors="replace")


async def _trace_in_elasticsearch(target: Target, trace_id: str) -> bool:
    """APM Server writes spans to the `traces-apm*` data streams with the ECS field `trace.id`."""
    import ssl

    verify: ssl.SSLContext | bool = (
        ssl.create_default_context(cafile=str(target.elastic_ca)) if target.elastic_ca else True
    )
    query = {"query": {"term": {"trace.id": trace_id}}, "size": 1}
    async with httpx.AsyncClient(timeout=target.timeout, verify=verify, auth=target.elastic_auth) as client:
        reply = await client.post(f"{target.elasticsearch}/traces-apm*/_search", json=query)
    return reply.status_code == 200 and reply.json().get("hits", {}).get("total", {}).get("value", 0) > 0


async def check_trace(client: httpx.AsyncClient, target: Target) -> Check:
    if not target.traces_file and not target.elasticsearch:
        return Check("trace in the backend", SKIP, "no traces backend configured (--traces-file or --elasticsearch)")
    reply, trace_id = await _classify(client, target, held_out_digits(1)[0][0])
    if reply.status_code != 200:
        return Check("trace in the backend", FAIL, f"the traced request answered {reply.status_code}")
    where = str(target.traces_file) if target.traces_file else f"{target.elasticsearch} traces-apm*"
    deadline = time.monotonic() + target.trace_wait
    while time.monotonic() < deadline:
        if target.traces_file:
            found = await _trace_in_file(target.traces_file, trace_id)
        else:
            found = await _trace_in_elasticsearch(target, trace_id)
        if found:
            return Check("trace in the backend", PASS, f"trace {trace_id} found in {where}")
        await asyncio.sleep(1.0)
    return Check("trace in the backend", FAIL, f"trace {trace_id} not in {where} within {target.trace_wait:.0f}s")


async def check_rate_limit(client: httpx.AsyncClient, target: Target) -> Check:
    """Last: a burst just past the tightest window; SKIP when this client cannot outrun the limit."""
    seconds = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
    window, limit = min(target.rate_limit().items(), key=lambda item: item[1] / seconds[item[0]])
    if limit > 5000:
        return Check("past the rate -> 429", SKIP, f"limit {limit}/{window} is too high to exceed from one client")
    _, model = _pipeline(target)
    from loadtests.payloads import infer_json_bodies

    body = infer_json_bodies()[0]
    url = f"{target.gateway}/v2/models/{model}/infer"
    headers = target.headers(**{"content-type": "application/json"})
    burst = 2 * limit + 10  # over the limit in at least one window even if the burst straddles two
    start = time.monotonic()

    async def one(_: int) -> int:
        return (await client.post(url, content=body, headers=headers)).status_code

    codes = Counter(await _paced(burst, 1e9, 64, one))
    elapsed = time.monotonic() - start
    seen = ", ".join(f"{code}x{n}" for code, n in sorted(codes.items()))
    if codes.get(429):
        return Check(
            "past the rate -> 429", PASS, f"{burst} requests in {elapsed:.2f}s (limit {limit}/{window}): {seen}"
        )
    if elapsed > seconds[window]:
        detail = f"sent {burst} in {elapsed:.2f}s, slower than {limit}/{window}: not exceeded ({seen})"
        return Check("past the rate -> 429", SKIP, detail)
    return Check("past the rate -> 429", FAIL, f"{burst} requests in {elapsed:.2f}s, no 429 ({seen})")


CHECKS: tuple[Callable[[httpx.AsyncClient, Target], Awaitable[Check]], ...] = (
    check_no_key,
    check_labels,
    check_pins,
    check_split,
    check_versions_ready,
    check_trace,
    check_slo_series,
    check_rate_limit,
)


async def run_checks(target: Target) -> list[Check]:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=target.timeout, limits=limits) as client:
        results = []
        for check in CHECKS:
            try:
                results.append(await check(client, target))
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                results.append(Check(check.__name__.removeprefix("check_"), FAIL, f"{type(exc).__name__}: {exc}"))
        return results


def render(results: list[Check]) -> str:
    width = max(len(c.name) for c in results)
    lines = [f"{c.status:4}  {c.name:{width}}  {c.detail}" for c in results]
    counts = Counter(c.status for c in results)
    lines.append(f"{counts[PASS]} passed, {counts[FAIL]} failed, {counts[SKIP]} skipped")
    return "\n".join(lines)


# --------------------------------------------------------------------------- CLI


def register(subparsers: argparse._SubParsersAction) -> None:
    from services.common.settings import SPEC_HELP

    parser = subparsers.add_parser(
        "verify",
        help="end-to-end checks against a running environment (local stack or a cluster after `pulumi up`)",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--gateway", required=True, help="gateway base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--api-key", default=os.environ.get("MESHSERVE_API_KEY"), help="default: $MESHSERVE_API_KEY")
    parser.add_argument("--consumer", help="the key's consumer (its rate limit); default: the spec's first")
    parser.add_argument("--prometheus", help="Prometheus base URL (port-forward svc/kps-prometheus 9090 on a cluster)")
    parser.add_argument("--spec", default=None, help=SPEC_HELP)
    parser.add_argument(
        "--stack", help="a Pulumi stack (Pulumi.<stack>.yaml): its replica overrides say which versions run there"
    )
    parser.add_argument("--root", default=".", help="folder holding Pulumi.<stack>.yaml")
    parser.add_argument("--traces-file", type=Path, help="the local stack's spans file (<run dir>/spans.jsonl)")
    parser.add_argument(
        "--elasticsearch", help="Elasticsearch URL holding APM's traces-apm* (cluster); $ELASTIC_USER/$ELASTIC_PASSWORD"
    )
    parser.add_argument("--elasticsearch-ca", type=Path, help="CA bundle of Elasticsearch's HTTPS (ECK's own CA)")
    parser.add_argument(
        "--allow-cpu-fallback", action="store_true", help="device: gpu versions may run on the CPU (no GPU here)"
    )
    parser.add_argument("--samples", type=int, default=60, help="held-out digits to classify")
    parser.add_argument("--split-requests", type=int, default=200, help="requests to observe the version split")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import orjson

    from mesh.compile.names import effective_weights, version_replicas
    from mesh.compile.settings import SettingsError, load_stack
    from mesh.spec import SpecError, load_spec
    from services.common.settings import resolve_spec

    if not args.api_key:
        print("meshserve verify: --api-key (or $MESHSERVE_API_KEY) is required", file=sys.stderr)
        return 2
    try:
        spec = load_spec(resolve_spec(args.spec).path, check_repository=False)
        env = load_stack(args.stack, Path(args.root)) if args.stack else None
        replicas = {m: version_replicas(m, spec, env) for m in spec.models} if env else None
        weights = {m: effective_weights(m, spec, env) for m in spec.models} if env else None
    except (SpecError, SettingsError, ValueError) as exc:
        print(f"meshserve verify: {exc}", file=sys.stderr)
        return 2
    user, password = os.environ.get("ELASTIC_USER"), os.environ.get("ELASTIC_PASSWORD")
    target = Target(
        gateway=args.gateway.rstrip("/"),
        api_key=args.api_key,
        prometheus=args.prometheus.rstrip("/") if args.prometheus else None,
        spec=spec,
        consumer=args.consumer,
        traces_file=args.traces_file,
        elasticsearch=args.elasticsearch.rstrip("/") if args.elasticsearch else None,
        elastic_auth=(user, password) if user and password else None,
        elastic_ca=args.elasticsearch_ca,
        samples=args.samples,
        split_requests=args.split_requests,
        allow_cpu_fallback=args.allow_cpu_fallback,
        replicas=replicas,
        weights=weights,
    )
    results = asyncio.run(run_checks(target))
    if args.json:
        print(orjson.dumps([asdict(c) for c in results], option=orjson.OPT_INDENT_2).decode())
    else:
        print(render(results))
    return 1 if any(c.status == FAIL for c in results) else 0
