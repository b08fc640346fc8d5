"""The tensor signature a model version serves: derived from the ONNX graph, narrowed by config.yaml.

Shapes here include the batch dimension as -1 when the model batches (max_batch_size > 0), the way
Triton reports them in model metadata; -1 means "any size".
"""

from __future__ import annotations

from dataclasses import dataclass

from services.common.datatypes import ORT_TO_V2
from services.modelserver.config import ModelConfig, TensorSpec


@dataclass(frozen=True, slots=True)
class TensorSig:
    name: str
    datatype: str
    shape: tuple[int, ...]

    def metadata(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True, slots=True)
class Signature:
    inputs: dict[str, TensorSig]
    outputs: dict[str, TensorSig]
    max_batch_size: int


def _graph_dims(shape: list) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) and d > 0 else -1 for d in shape)


def _merge(kind: str, graph: TensorSig, spec: TensorSpec | None, max_batch: int) -> TensorSig:
    """Check one config tensor against the graph; the config may narrow variable dims, never widen."""
    if max_batch > 0:
        if not graph.shape:
            raise ValueError(f"{kind} {graph.name!r} is a scalar; max_batch_size > 0 needs a batch dimension")
        if graph.shape[0] != -1:
            raise ValueError(
                f"{kind} {graph.name!r}: max_batch_size > 0 but the graph fixes the first dimension "
                f"to {graph.shape[0]}; export it with a dynamic batch axis or set max_batch_size: 0"
            )
    if spec is None:
        return graph
    if spec.data_type != graph.datatype:
        raise ValueError(f"{kind} {graph.name!r}: config says {spec.data_type}, the graph has {graph.datatype}")
    dims = ((-1,) if max_batch > 0 else ()) + tuple(spec.dims)
    if len(dims) != len(graph.shape):
        raise ValueError(
            f"{kind} {graph.name!r}: config dims {spec.dims} (batch dim excluded: {max_batch > 0}) "
            f"do not match the graph's rank {len(graph.shape)} (shape {list(graph.shape)})"
        )
    for mine, theirs in zip(dims, graph.shape, strict=True):
        if theirs != -1 and mine != theirs:
            raise ValueError(
                f"{kind} {graph.name!r}: config dims {spec.dims} conflict with the graph shape {list(graph.shape)}"
            )
    return TensorSig(graph.name, graph.datatype, dims)


def _side(kind: str, graph_args: list, specs: list[TensorSpec], max_batch: int) -> dict[str, TensorSig]:
    graph: dict[str, TensorSig] = {}
    for arg in graph_args:
        datatype = ORT_TO_V2.get(arg.type)
        if datatype is None:
            raise ValueError(f"{kind} {arg.name!r} has type {arg.type}, which the v2 protocol cannot carry")
        graph[arg.name] = TensorSig(arg.name, datatype, _graph_dims(arg.shape))
    by_name = {s.name: s for s in specs}
    unknown = sorted(set(by_name) - set(graph))
    if unknown:
        raise ValueError(f"config {kind}s {unknown} are not in the graph, which has {sorted(graph)}")
    return {name: _merge(kind, sig, by_name.get(name), max_batch) for name, sig in graph.items()}


def build_signature(config: ModelConfig, graph_inputs: list, graph_outputs: list) -> Signature:
    """`graph_inputs/outputs` are onnxruntime NodeArg lists (name, type, shape)."""
    return Signature(
        inputs=_side("input", graph_inputs, config.input, config.max_batch_size),
        outputs=_side("output", graph_outputs, config.output, config.max_batch_size),
        max_batch_size=config.max_batch_size,
    )
