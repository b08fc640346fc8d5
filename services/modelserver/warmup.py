"""Warm-up of a model version before it serves (Triton's `model_warmup` in config.yaml).

Each entry is a sample (zeros or random values of the given dims, batch_size rows) run `count`
times on the new version's sessions, in the load thread, before the version replaces anything.
A failure is a failed load: the reason goes to the repository index and the versions already
serving keep all traffic. Random data is seeded (the same sample every load): floats in [0, 1),
integers 0 or 1 (valid as indices and flags), random booleans, short digit strings for BYTES.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from services.common.datatypes import V2_TO_NUMPY
from services.modelserver.config import ModelConfig, ModelWarmup
from services.modelserver.runtime import Runtime
from services.modelserver.signature import Signature


class WarmupError(Exception):
    """A warm-up sample is invalid for the model, or running it failed."""


def _values(datatype: str, shape: list[int], random: bool, rng: np.random.Generator) -> np.ndarray:
    dtype = V2_TO_NUMPY[datatype]
    if datatype == "BYTES":
        text = rng.integers(0, 10**6, size=shape).astype(str) if random else np.full(shape, "")
        return text.astype(object)
    if not random:
        return np.zeros(shape, dtype)
    if dtype.kind == "f":
        return rng.random(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    return rng.integers(0, 2, size=shape).astype(dtype)


def samples(config: ModelConfig, signature: Signature, entries: list[ModelWarmup]) -> Iterator[tuple[str, dict, int]]:
    """(name, feeds, count) per warm-up entry, checked against the signature the version serves."""
    batched = config.max_batch_size > 0
    for entry in entries:
        rng = np.random.default_rng(0)
        given = entry.inputs
        if given is not None and set(given) != set(signature.inputs):
            raise WarmupError(
                f"warm-up {entry.name!r} gives inputs {sorted(given)}, the model takes {sorted(signature.inputs)}"
            )
        if batched and not 1 <= entry.batch_size <= config.max_batch_size:
            raise WarmupError(
                f"warm-up {entry.name!r}: batch_size {entry.batch_size} is outside [1, {config.max_batch_size}]"
            )
        feeds: dict[str, np.ndarray] = {}
        for name, sig in signature.inputs.items():
            model_dims = list(sig.shape[1:] if batched else sig.shape)
            spec = given[name] if given is not None else None
            if spec is None:
                datatype, dims, random = sig.datatype, [d if d > 0 else 1 for d in model_dims], False
            else:
                datatype, dims, random = spec.data_type, spec.dims, spec.random_data
                if datatype != sig.datatype:
                    raise WarmupError(f"warm-up {entry.name!r}: input {name!r} is {sig.datatype}, not {datatype}")
                if len(dims) != len(model_dims) or any(
                    m != -1 and m != d for m, d in zip(model_dims, dims, strict=True)
                ):
                    raise WarmupError(
                        f"warm-up {entry.name!r}: input {name!r} dims {dims} do not fit the model's {model_dims}"
                        + (" (batch dim excluded)" if batched else "")
                    )
            feeds[name] = _values(datatype, ([entry.batch_size] if batched else []) + dims, random, rng)
        yield entry.name, feeds, entry.count


PROBE = ModelWarmup(name="probe")  # zeros for every input, batch 1: re-checks a failing version with no warm-up


def run(runtime: Runtime, config: ModelConfig, entries: list[ModelWarmup] | None = None) -> int:
    """Run every sample `count` times (load thread); WarmupError names the sample, run and error.
    Returns the number of runs."""
    outputs = list(runtime.signature.outputs)
    runs = 0
    for name, feeds, count in samples(config, runtime.signature, config.model_warmup if entries is None else entries):
        for i in range(count):
            try:
                runtime.run(feeds, outputs)
            except Exception as exc:
                raise WarmupError(
                    f"warm-up {name!r} failed on run {i + 1} of {count}: {type(exc).__name__}: {exc}"
                ) from None
            runs += 1
    return runs
