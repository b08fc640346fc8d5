"""Publish: validate a candidate ONNX file against the model's config signature, evaluate it and its
baseline on the model's evaluation data, measure both, judge the gates, and write the next version
(`<model>/<N+1>/model.onnx` + `metadata.yaml`) atomically, to a local repository or an S3 prefix.

A candidate that fails a gate is refused (PublishRefused, naming every failed gate) and nothing is
written; `force` records the failure in the metadata and writes anyway (for tests and deliberate drills).
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import math
import os
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import yaml
from pydantic import ValidationError

from lifecycle import evaluate
from lifecycle.contract import CONTRACT_FILE, Contract, parse_contract
from lifecycle.gates import Figures, GateResult, judge
from lifecycle.store import METADATA_FILE, MODEL_FILE, Store, VersionExists
from services.modelserver.config import CONFIG_FILE, ModelConfig

PUBLISHED_BY_ENV = "MESHSERVE_PUBLISHED_BY"
MEASUREMENT_NOTE = (
    "one onnxruntime thread, CPU provider, candidate and baseline in turns, short runs; shared machines are noisy"
)


class PublishRefused(RuntimeError):
    """The candidate failed a check or a gate: nothing was written."""

    def __init__(self, message: str, gates: list[GateResult] | None = None) -> None:
        super().__init__(message)
        self.gates = gates or []


@dataclass
class Model:
    """What the repository says about one model: its config, contract and evaluation data."""

    name: str
    config: ModelConfig
    contract: Contract
    data: evaluate.EvalData


@dataclass
class Outcome:
    model: str
    version: int | None  # None when refused
    location: str | None
    gates: list[GateResult]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)


def load_model(store: Store, name: str) -> Model:
    """config.yaml (validated like the server does) + evaluation.yaml + the evaluation data."""
    try:
        raw = yaml.safe_load(store.read(f"{name}/{CONFIG_FILE}"))
    except FileNotFoundError:
        raise ValueError(f"no model {name!r} in {store.uri} ({name}/{CONFIG_FILE} is missing)") from None
    try:
        config = ModelConfig.model_validate({"name": name, **(raw or {})})
    except ValidationError as exc:
        raise ValueError(f"{store.uri}/{name}/{CONFIG_FILE}: {exc.errors()[0]['msg']}") from None
    try:
        contract_text = store.read(f"{name}/{CONTRACT_FILE}").decode()
    except FileNotFoundError:
        raise ValueError(
            f"{store.uri}/{name}/{CONTRACT_FILE} is missing: a model declares how it is evaluated before "
            "versions can be published (see lifecycle/README.md)"
        ) from None
    contract = parse_contract(contract_text, f"{store.uri}/{name}/{CONTRACT_FILE}")
    return Model(name, config, contract, evaluate.load_data(contract, config, store.read, name))


def published_by() -> str:
    """Who or what published: MESHSERVE_PUBLISHED_BY, else the CI's actor, else user@host."""
    if os.environ.get(PUBLISHED_BY_ENV):
        return os.environ[PUBLISHED_BY_ENV]
    if os.environ.get("GITHUB_ACTOR"):
        return f"github-actions ({os.environ['GITHUB_ACTOR']}, run {os.environ.get('GITHUB_RUN_ID', '?')})"
    return f"{getpass.getuser()}@{socket.gethostname()}"


@dataclass
class Judgement:
    """Everything measured about one candidate: its figures, the gates' verdicts, the performance."""

    stable: int | None
    baseline: int | None
    figures: Figures
    correlation: float
    stable_distinct_answers: int | None
    gates: list[GateResult]
    performance: dict[str, dict | None]  # "candidate", "v<N>" for the stable and the baseline


def judge_candidate(
    store: Store,
    model: Model,
    candidate: bytes,
    stable: int | None,
    baseline: int | None,
    budget_s: float,
    log: Callable[[str], None],
) -> Judgement:
    """Run the candidate, the stable version and the baseline through the server's runtime: answers on the
    evaluation data, single-core measurements in turns, and the contract's gates."""
    name = model.name
    with contextlib.ExitStack() as closing:
        try:
            runtime = evaluate.load_runtime(candidate, model.config, f"{name}:candidate")
        except ValueError as exc:
            raise PublishRefused(f"signature check failed: {exc}") from None
        closing.callback(runtime.close)
        runtimes = {"candidate": runtime}
        for version in sorted({v for v in (stable, baseline) if v is not None}):
            other = evaluate.load_runtime(
                store.read(f"{name}/{version}/{MODEL_FILE}"), model.config, f"{name}:{version}"
            )
            closing.callback(other.close)
            runtimes[f"v{version}"] = other
        scores = evaluate.predict(runtime, model.contract, model.data)
        stable_scores = None if stable is None else evaluate.predict(runtimes[f"v{stable}"], model.contract, model.data)
        sizes = evaluate.batch_sizes(model.contract, model.config)
        log(f"measuring {' and '.join(runtimes)} in turns at batch sizes {sizes} (one thread)")
        performance = evaluate.measure(runtimes, model.data, sizes, budget_s)

    top1 = evaluate.top1(scores)
    stable_top1 = None if stable_scores is None else evaluate.top1(stable_scores)
    agree, stable_value = math.nan, math.nan
    if stable_top1 is not None:
        agree = evaluate.agreement(top1, stable_top1)
    if model.contract.metric == "accuracy":
        value = evaluate.accuracy(top1, model.data.labels)
        if stable_top1 is not None:
            stable_value = evaluate.accuracy(stable_top1, model.data.labels)
    else:
        value, stable_value = agree, (math.nan if stable_top1 is None else 1.0)
    baseline_perf = performance.get(f"v{baseline}")
    figures = Figures(
        model.contract.metric,
        value,
        stable_value,
        agree,
        performance["candidate"]["cpu_b1_ms"],
        baseline_perf["cpu_b1_ms"] if baseline_perf else math.nan,
    )
    gates = [GateResult("signature", "config.yaml's inputs and outputs", "matches", True)]
    gates += judge(figures, model.contract.gates)
    return Judgement(
        stable,
        baseline,
        figures,
        math.nan if stable_scores is None else evaluate.score_correlation(scores, stable_scores),
        None if stable_top1 is None else len(set(stable_top1.tolist())),
        gates,
        performance,
    )


def metadata_for(
    model: Model, candidate: bytes, j: Judgement, parent: int | None, produced_by: dict[str, Any], note: str
) -> dict[str, Any]:
    """metadata.yaml of the new version (its number is filled in when it is known)."""
    failed = not all(g.passed for g in j.gates)
    f = j.figures
    return {
        "model": model.name,
        "version": None,
        "sha256": hashlib.sha256(candidate).hexdigest(),
        "size_bytes": len(candidate),
        "parent": parent,
        "produced_by": {"how": "publish", **produced_by} | ({"note": note} if note else {}),
        "published": {"at": datetime.now(UTC).isoformat(timespec="seconds"), "by": published_by()},
        "evaluation": {
            "metric": f.metric,
            "value": _round(f.value),
            "rows": model.data.count,
            "data": model.data.source,
            "stable_version": j.stable,
            "stable_value": _round(f.stable_value),
            "agreement_with_stable": _round(f.agreement),
            "output_correlation_with_stable": _round(j.correlation),
            "stable_distinct_answers": j.stable_distinct_answers,
            "gates": [asdict(g) for g in j.gates],
            "passed": not failed,
            "overridden": failed,
        },
        "performance": {
            "note": MEASUREMENT_NOTE,
            "candidate": j.performance["candidate"],
            "baseline_version": j.baseline,
            "baseline": j.performance.get(f"v{j.baseline}"),
            "stable_version": j.stable,
            "stable": j.performance.get(f"v{j.stable}"),
        },
    }


def publish(
    store: Store,
    name: str,
    candidate: bytes,
    *,
    stable: int | None = None,
    parent: int | None = None,
    produced_by: dict[str, Any] | None = None,
    note: str = "",
    force: bool = False,
    log: Callable[[str], None] = print,
    measure_budget_s: float = 0.4,
) -> Outcome:
    """Judge `candidate` and, if it passes (or `force`), write it as the next version of `name`."""
    model = load_model(store, name)
    versions = store.versions(name)
    if stable is None and versions:
        stable = versions[-1]
    for label, version in (("stable", stable), ("source", parent)):
        if version is not None and version not in versions:
            raise ValueError(f"{label} version {version} of {name!r} is not in {store.uri} (versions: {versions})")
    baseline = parent if parent is not None else stable
    judgement = judge_candidate(store, model, candidate, stable, baseline, measure_budget_s, log)
    for gate in judgement.gates:
        log(f"  {'pass' if gate.passed else 'FAIL'}  {gate.name}: {gate.observed} (bound {gate.bound})")
    failed = [g for g in judgement.gates if not g.passed]
    if failed and not force:
        names = ", ".join(f"{g.name} ({g.observed}, bound {g.bound})" for g in failed)
        raise PublishRefused(f"{name}: refused, failed gate(s): {names}; nothing written", judgement.gates)

    metadata = metadata_for(model, candidate, judgement, parent, produced_by or {}, note)
    for attempt in range(3):  # someone else may take the number between our look and our write
        version = store.next_version(name)
        metadata["version"] = version
        body = yaml.safe_dump(metadata, sort_keys=False).encode()
        try:
            location = store.write_version(name, version, {MODEL_FILE: candidate, METADATA_FILE: body})
        except VersionExists:
            if attempt == 2:
                raise
            continue
        log(f"published {name} v{version} -> {location}" + (" (gates OVERRIDDEN)" if failed else ""))
        return Outcome(name, version, location, judgement.gates, metadata)
    raise AssertionError("unreachable")


def _round(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 6)
