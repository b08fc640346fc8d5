"""v2 gRPC infer messages <-> numpy, for the data plane (the gRPC twin of codec.py's JSON/binary).

Inputs come either as typed `contents` (one repeated field per datatype family, as the protocol
says) or as `raw_input_contents` (one little-endian buffer per input, read with np.frombuffer: no
copy beyond the one protobuf makes). Every check happens before anything is allocated from a
client's numbers: a shape is only multiplied, compared with the bytes actually present, never used
to size a buffer. Failures are ProtocolError(400) naming the tensor, as on REST.
"""

from __future__ import annotations

import math
from types import ModuleType

import numpy as np

from services.common.datatypes import INTEGER_LIMITS, V2_TO_NUMPY
from services.common.errors import ProtocolError
from services.common.v2wire import bad, read_tensor, strings_to_binary
from services.modelserver.codec import InferRequest
from services.modelserver.repository import ServingVersion
from services.modelserver.signature import Signature

# datatype -> (InferTensorContents field, numpy dtype of that field's values)
CONTENTS: dict[str, tuple[str, np.dtype]] = {
    "BOOL": ("bool_contents", np.dtype(bool)),
    "INT8": ("int_contents", np.dtype(np.int32)),
    "INT16": ("int_contents", np.dtype(np.int32)),
    "INT32": ("int_contents", np.dtype(np.int32)),
    "INT64": ("int64_contents", np.dtype(np.int64)),
    "UINT8": ("uint_contents", np.dtype(np.uint32)),
    "UINT16": ("uint_contents", np.dtype(np.uint32)),
    "UINT32": ("uint_contents", np.dtype(np.uint32)),
    "UINT64": ("uint64_contents", np.dtype(np.uint64)),
    "FP32": ("fp32_contents", np.dtype(np.float32)),
    "FP64": ("fp64_contents", np.dtype(np.float64)),
    "BYTES": ("bytes_contents", np.dtype(object)),
}  # FP16 has no typed field: raw contents only


def _param_value(param: object) -> object:
    """The value of an InferParameter (its oneof), or None when unset."""
    which = param.WhichOneof("parameter_choice")  # type: ignore[attr-defined]
    return None if which is None else getattr(param, which)


def _flag(params: object, key: str, where: str) -> bool | None:
    if key not in params:  # type: ignore[operator]
        return None
    value = _param_value(params[key])  # type: ignore[index]
    if type(value) is not bool:
        raise bad(f"{where}: parameter {key!r} must be a bool_param")
    return value


def _shape(name: str, dims: object, expected: tuple[int, ...], max_batch: int) -> tuple[int, ...]:
    shape = tuple(dims)  # type: ignore[call-overload]
    if any(d < 0 for d in shape):
        raise bad(f"input {name!r}: shape must be non-negative integers, got {list(shape)}")
    if len(shape) != len(expected) or any(e != -1 and s != e for s, e in zip(shape, expected, strict=True)):
        batch_note = " (first dim is the batch)" if max_batch > 0 else ""
        raise bad(f"input {name!r}: shape {list(shape)} does not match the model's {list(expected)}{batch_note}")
    return shape


def _from_raw(name: str, datatype: str, raw: bytes, count: int) -> np.ndarray:
    return read_tensor(name, datatype, memoryview(raw), 0, len(raw), count, size_field="raw_input_contents has")


def _from_contents(name: str, datatype: str, contents: object, count: int) -> np.ndarray:
    field = CONTENTS.get(datatype)
    if field is None:
        raise bad(f"input {name!r}: {datatype} has no typed contents field; send it in raw_input_contents")
    values = getattr(contents, field[0])
    if len(values) != count:
        raise bad(f"input {name!r}: contents.{field[0]} has {len(values)} elements, the shape needs {count}")
    if datatype == "BYTES":
        arr = np.empty(count, dtype=object)
        try:
            arr[:] = [v.decode("utf-8") for v in values]
        except UnicodeDecodeError:
            raise bad(f"input {name!r}: a BYTES element is not UTF-8 (ONNX strings are)") from None
        return arr
    arr = np.array(values, dtype=field[1])
    limits = INTEGER_LIMITS.get(datatype)
    if limits is not None and arr.size and field[1] != V2_TO_NUMPY[datatype]:
        low, high = limits
        if int(arr.min()) < low or int(arr.max()) > high:
            raise bad(f"input {name!r}: values out of range for {datatype} [{low}, {high}]")
    return arr.astype(V2_TO_NUMPY[datatype], copy=False)


def _others_set(contents: object) -> bool:
    return any(len(getattr(contents, f)) for f, _ in set(CONTENTS.values()))


def decode_infer(request: object, deadline_us: int | None, signature: Signature) -> InferRequest:
    """Validate one ModelInferRequest against the signature of the version that will run it.
    `deadline_us` is what is left of the call's gRPC deadline: a request still queued then gets 504."""
    raw_inputs = request.inputs  # type: ignore[attr-defined]
    raw_contents = request.raw_input_contents  # type: ignore[attr-defined]
    if not raw_inputs:
        raise bad("request needs 'inputs': a non-empty list of tensors")
    if raw_contents and len(raw_contents) != len(raw_inputs):
        raise bad(
            f"raw_input_contents has {len(raw_contents)} entries for {len(raw_inputs)} inputs: "
            "when used it must hold one per input, in input order"
        )
    max_batch = signature.max_batch_size
    expected = signature.inputs
    inputs: dict[str, np.ndarray] = {}
    batch: int | None = None
    for index, tensor in enumerate(raw_inputs):
        name = tensor.name
        sig = expected.get(name)
        if sig is None:
            raise bad(f"unknown input {name!r}; the model takes {sorted(expected)}")
        if name in inputs:
            raise bad(f"input {name!r} is given twice")
        if tensor.datatype != sig.datatype:
            raise bad(f"input {name!r}: datatype {tensor.datatype!r} does not match the model's {sig.datatype}")
        shape = _shape(name, tensor.shape, sig.shape, max_batch)
        if max_batch > 0:
            if not 1 <= shape[0] <= max_batch:
                raise bad(f"input {name!r}: batch size {shape[0]} is outside [1, {max_batch}] (max_batch_size)")
            if batch is not None and shape[0] != batch:
                raise bad(f"input {name!r}: batch size {shape[0]} differs from the other inputs' {batch}")
            batch = shape[0]
        count = math.prod(shape)
        if raw_contents:
            if tensor.HasField("contents") and _others_set(tensor.contents):
                raise bad(f"input {name!r}: both contents and raw_input_contents are given")
            arr = _from_raw(name, sig.datatype, raw_contents[index], count)
        else:
            arr = _from_contents(name, sig.datatype, tensor.contents, count)
        inputs[name] = arr.reshape(shape)
    missing = sorted(set(expected) - set(inputs))
    if missing:
        raise bad(f"missing inputs {missing}; the model takes {sorted(expected)}")
    params = request.parameters  # type: ignore[attr-defined]
    binary_default = _flag(params, "binary_data_output", "request") is not False  # raw unless asked otherwise
    outputs: list[tuple[str, bool]] = []
    for wanted in request.outputs:  # type: ignore[attr-defined]
        name = wanted.name
        if name not in signature.outputs:
            raise bad(f"unknown output {name!r}; the model gives {sorted(signature.outputs)}")
        if any(name == done for done, _ in outputs):
            raise bad(f"output {name!r} is requested twice")
        if "classification" in wanted.parameters:
            raise bad(f"output {name!r}: the classification extension is not supported")
        flag = _flag(wanted.parameters, "binary_data", f"output {name!r}")
        outputs.append((name, binary_default if flag is None else flag))
    if not outputs:
        outputs = [(name, binary_default) for name in signature.outputs]
    timeout = _param_value(params["timeout"]) if "timeout" in params else None
    if timeout is not None and (type(timeout) is not int or timeout < 0):
        raise bad("parameter 'timeout' must be a non-negative int64_param (microseconds)")
    if deadline_us is not None:
        timeout = deadline_us if timeout is None else min(timeout, deadline_us)
    return InferRequest(request.id or None, inputs, batch or 1, outputs, timeout)  # type: ignore[attr-defined]


def encode_infer(
    pb2: ModuleType, serving: ServingVersion, request: InferRequest, outputs: list[tuple[str, str, np.ndarray, bool]]
) -> object:
    """A ModelInferResponse. Outputs go in raw_output_contents (what Triton answers) unless every one
    asked for typed contents; the two cannot be mixed in one response, and FP16 is raw only."""
    typed = all(not binary and datatype != "FP16" for _, datatype, _, binary in outputs)
    response = pb2.ModelInferResponse(model_name=serving.model, model_version=serving.name_version)
    if request.id is not None:
        response.id = request.id
    for name, datatype, arr, _ in outputs:
        tensor = response.outputs.add()
        tensor.name = name
        tensor.datatype = datatype
        tensor.shape.extend(arr.shape)
        if typed:
            field = CONTENTS[datatype][0]
            flat = arr.reshape(-1)
            if datatype == "BYTES":
                getattr(tensor.contents, field).extend(x if isinstance(x, bytes) else str(x).encode() for x in flat)
            else:
                getattr(tensor.contents, field).extend(flat.tolist())
        elif datatype == "BYTES":
            response.raw_output_contents.append(strings_to_binary(arr))
        else:
            response.raw_output_contents.append(np.ascontiguousarray(arr).tobytes())
    return response


STATUS_NAMES = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 413: "RESOURCE_EXHAUSTED", 415: "INVALID_ARGUMENT"}


def grpc_status_name(exc: ProtocolError) -> str:
    """The gRPC status code name for a ProtocolError's HTTP status."""
    if exc.status in STATUS_NAMES:
        return STATUS_NAMES[exc.status]
    return {503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}.get(exc.status, "INTERNAL")
