"""Open Inference Protocol (v2) infer requests -> numpy, checked against the model's signature.

The wire itself (the Inference-Header-Content-Length split, the binary offset walk, reading one tensor,
writing the response) is services/common/v2wire.py's, shared with the pipeline and the gateway; here
are what only a model server decides: the signature and batch checks, the JSON data paths (jsonload's
large-body path included) and the InferRequest the data plane runs.
Every failure is a ProtocolError whose message names the tensor and what was wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from services.common.datatypes import INTEGER_LIMITS, V2_TO_NUMPY
from services.common.v2wire import bad, object_array, read_tensor
from services.modelserver import jsonload
from services.modelserver.signature import Signature


@dataclass(slots=True)
class InferRequest:
    id: str | None
    inputs: dict[str, np.ndarray]
    batch: int  # rows along the batch dimension; 1 for models without one
    outputs: list[tuple[str, bool]]  # (name, binary) in the order to answer
    timeout_us: int | None


_INT = frozenset({int})


def _shape(name: str, raw: object) -> tuple[int, ...]:
    # set(map(type)) and min() loop in C: a generator here was ~5 % of the loop's bytecodes per request
    if type(raw) is not list or not set(map(type, raw)) <= _INT or min(raw, default=0) < 0:
        raise bad(f"input {name!r}: shape must be a list of non-negative integers, got {_brief(raw)}")
    return tuple(raw)


def _brief(value: object) -> str:
    """A client's value in an error message, cut short (a shape may have a million dims)."""
    text = repr(list(value) if isinstance(value, tuple) else value)
    return text if len(text) <= 80 else f"{text[:80]}... ({len(text)} characters)"


def _check_shape(name: str, shape: tuple[int, ...], expected: tuple[int, ...], max_batch: int) -> None:
    if len(shape) == len(expected) and (
        shape == expected or (expected and expected[0] == -1 and shape[1:] == expected[1:])  # the usual: in C
    ):
        return
    if len(shape) != len(expected) or any(e != -1 and s != e for s, e in zip(shape, expected, strict=True)):
        batch_note = " (first dim is the batch)" if max_batch > 0 else ""
        raise bad(f"input {name!r}: shape {_brief(shape)} does not match the model's {list(expected)}{batch_note}")


def _flatten_strings(name: str, data: object) -> list[str]:
    if isinstance(data, str):
        return [data]
    if not isinstance(data, list):
        raise bad(f"input {name!r}: BYTES data must be strings, got {type(data).__name__}")
    out: list[str] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, str):
                out.append(item)
            elif isinstance(item, list):
                stack.append(iter(item))
                break
            else:
                raise bad(f"input {name!r}: BYTES data must be strings, got {type(item).__name__}")
        else:
            stack.pop()
    return out


def _inferred(name: str, datatype: str, data: list) -> np.ndarray:
    """numpy's own reading of the values (dtype inferred), so the caller can check their kind."""
    try:
        return np.array(data)
    except (ValueError, TypeError, OverflowError) as exc:
        raise bad(f"input {name!r}: data is not a {datatype} tensor ({exc})") from None


_JSON_NAMES = {bool: "booleans", str: "strings", type(None): "nulls", float: "floats", list: "lists"}
_KIND_NAMES = {"b": "booleans", "U": "strings", "S": "strings", "O": "nulls or mixed values"}


def _numbers(name: str, datatype: str, data: list, allowed: frozenset[type], may_hold_bools: bool) -> np.ndarray:
    """The list as numpy numbers, refusing the JSON kinds the datatype does not take.

    One numpy pass infers the kind (strings, nulls and all-boolean lists show in the dtype); the
    elements are only looked at for object arrays (nulls, ints beyond 64 bits) and when the body
    spells `true`/`false` at all, since numpy reads [1.5, true] as floats.
    """
    arr = _inferred(name, datatype, data)
    kind = arr.dtype.kind
    if kind in "iuf" and not may_hold_bools:
        return arr
    needs = "numbers" if float in allowed else "integers"
    hint = _NON_FINITE_HINT if float in allowed else ""
    if kind not in "iufO":
        raise bad(f"input {name!r}: {datatype} data must be {needs}, got {_KIND_NAMES.get(kind, arr.dtype)}{hint}")
    elements = arr if kind == "O" else np.array(data, dtype=object)
    wrong = set(map(type, elements.reshape(-1))) - allowed
    if wrong:
        got = ", ".join(sorted(_JSON_NAMES.get(t, t.__name__) for t in wrong))
        raise bad(f"input {name!r}: {datatype} data must be {needs}, got {got}{hint if str in wrong else ''}")
    return arr


_FLOAT_TYPES = frozenset({int, float})
_NON_FINITE_HINT = " (JSON numbers cannot be NaN or infinite: send such values with the binary tensor extension)"
_INT_TYPES = frozenset({int})


def _from_json(name: str, datatype: str, data: object, count: int, may_hold_bools: bool) -> np.ndarray:
    """`data` is a JSON list, or a flat numeric array / `Nested` from jsonload's large-body path (numbers only)."""
    if isinstance(data, np.ndarray):
        arr = data
    elif isinstance(data, jsonload.Nested):
        if data.flat.size != count:  # counted before the nesting is looked at
            raise bad(f"input {name!r}: data has {data.flat.size} elements, the shape needs {count}")
        if jsonload.nested_shape(data.text) is None:
            raise bad(f"input {name!r}: data is not a {datatype} tensor (nested lists are ragged or too deep)")
        arr = data.flat
    elif not isinstance(data, list):
        raise bad(f"input {name!r}: 'data' must be a list, got {type(data).__name__}")
    elif datatype == "BYTES":
        arr = object_array(_flatten_strings(name, data))
    else:
        arr = None
    dtype = V2_TO_NUMPY[datatype]
    if dtype.kind == "f":
        if arr is None:
            arr = _numbers(name, datatype, data, _FLOAT_TYPES, may_hold_bools)
            if arr.dtype.kind in "iu":  # JSON numbers are doubles: round as the large-body path does
                arr = arr.astype(np.float64)
        with np.errstate(over="ignore"):
            try:
                arr = arr.astype(dtype, copy=False)
            except (ValueError, TypeError, OverflowError) as exc:
                raise bad(f"input {name!r}: data is not a {datatype} tensor ({exc})") from None
        if np.isinf(arr).any():  # JSON cannot spell infinity: this is a value too large for the type
            raise bad(f"input {name!r}: values out of range for {datatype}{_NON_FINITE_HINT}")
    elif dtype.kind == "b":
        arr = _inferred(name, datatype, data) if arr is None else arr
        if arr.size and arr.dtype.kind != "b":
            raise bad(f"input {name!r}: BOOL data must be true/false, got {arr.dtype} values")
        arr = arr.astype(dtype, copy=False)
    elif dtype.kind in "iu":
        if arr is None:
            arr = _numbers(name, datatype, data, _INT_TYPES, may_hold_bools)
            if arr.size and arr.dtype.kind not in "iu":
                arr = _big_integers(name, datatype, data)
        if arr.size:
            low, high = INTEGER_LIMITS[datatype]
            if int(arr.min()) < low or int(arr.max()) > high:
                raise bad(f"input {name!r}: values out of range for {datatype} [{low}, {high}]")
        arr = arr.astype(dtype, copy=False)
    if arr.size != count:
        raise bad(f"input {name!r}: data has {arr.size} elements, the shape needs {count}")
    return arr


def _big_integers(name: str, datatype: str, data: list) -> np.ndarray:
    """Slow path: numpy infers float64/object for ints beyond int64 (UINT64's upper half)."""
    try:
        flat = np.array(data, dtype=object).reshape(-1)
    except ValueError as exc:
        raise bad(f"input {name!r}: data is not a {datatype} tensor ({exc})") from None
    if not all(type(v) is int for v in flat):
        raise bad(f"input {name!r}: {datatype} data must be integers")
    low, high = INTEGER_LIMITS[datatype]
    if any(v < low or v > high for v in flat):
        raise bad(f"input {name!r}: values out of range for {datatype} [{low}, {high}]")
    return np.array(flat.tolist(), dtype=V2_TO_NUMPY[datatype])


def _param(params: object, name: str) -> dict:
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise bad(f"{name}: parameters must be an object")
    return params


_TEXT_OR_BOOL = frozenset({"BYTES", "BOOL"})


def _spells_boolean(header: bytes | memoryview) -> bool:
    """numpy reads [1.5, true] as floats: only a body that spells a JSON boolean needs the element check
    (a substring search, about 0.5 ns a byte, where looking at every element costs some 10 ns each)."""
    text = header if isinstance(header, bytes) else bytes(header)
    return b"true" in text or b"false" in text


def _flag(params: dict, key: str, where: str) -> bool | None:
    value = params.get(key)
    if value is not None and type(value) is not bool:
        raise bad(f"{where}: parameter {key!r} must be true or false, got {type(value).__name__}")
    return value


def decode_request(header: bytes | memoryview, binary: memoryview, signature: Signature) -> InferRequest:
    """Parse and validate one infer request against the signature of the version that will run it."""
    try:
        doc = jsonload.load(header)
    except jsonload.JSONError as exc:
        raise bad(f"malformed JSON in request body: {exc}") from None
    except jsonload.JSONTooLarge as exc:
        raise bad(f"{exc}: too long for the JSON path; send large tensors with the binary tensor extension") from None
    if not isinstance(doc, dict):
        raise bad("request body must be a JSON object")
    params = _param(doc.get("parameters"), "request")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise bad("request needs 'inputs': a non-empty list of tensors")

    may_hold_bools: bool | None = None  # looked up once, and only for a numeric tensor given as a JSON list
    max_batch = signature.max_batch_size
    expected = signature.inputs
    inputs: dict[str, np.ndarray] = {}
    batch: int | None = None
    offset = 0
    for raw in raw_inputs:
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise bad("each input must be an object with a string 'name'")
        name = raw["name"]
        sig = expected.get(name)
        if sig is None:
            raise bad(f"unknown input {name!r}; the model takes {sorted(expected)}")
        if name in inputs:
            raise bad(f"input {name!r} is given twice")
        datatype = raw.get("datatype")
        if datatype != sig.datatype:
            raise bad(f"input {name!r}: datatype {datatype!r} does not match the model's {sig.datatype}")
        shape = _shape(name, raw.get("shape"))
        _check_shape(name, shape, sig.shape, max_batch)
        if max_batch > 0:
            if not 1 <= shape[0] <= max_batch:
                raise bad(f"input {name!r}: batch size {shape[0]} is outside [1, {max_batch}] (max_batch_size)")
            if batch is not None and shape[0] != batch:
                raise bad(f"input {name!r}: batch size {shape[0]} differs from the other inputs' {batch}")
            batch = shape[0]
        count = math.prod(shape)
        size = _param(raw.get("parameters"), f"input {name!r}").get("binary_data_size")
        if size is not None:
            arr = read_tensor(name, datatype, binary, offset, size, count)
            offset += size
        elif "data" in raw:
            if count > (len(header) + 1) // 2:  # every JSON element takes a character and a separator
                raise bad(
                    f"input {name!r}: shape {list(shape)} needs {count} elements, a JSON body of {len(header)} "
                    f"bytes holds at most {(len(header) + 1) // 2}"
                )
            data = raw["data"]
            if may_hold_bools is None and type(data) is list and datatype not in _TEXT_OR_BOOL:
                may_hold_bools = _spells_boolean(header)
            arr = _from_json(name, datatype, data, count, bool(may_hold_bools))
        else:
            raise bad(f"input {name!r} has neither 'data' nor parameters.binary_data_size")
        inputs[name] = arr.reshape(shape)
    if offset != len(binary):
        raise bad(f"the body has {len(binary) - offset} binary bytes that no input's binary_data_size claims")
    missing = sorted(set(expected) - set(inputs))
    if missing:
        raise bad(f"missing inputs {missing}; the model takes {sorted(expected)}")

    binary_default = _flag(params, "binary_data_output", "request") is True
    outputs: list[tuple[str, bool]]
    raw_outputs = doc.get("outputs")
    if raw_outputs is None or raw_outputs == []:  # none requested: all of them (the protocol's default)
        outputs = [(name, binary_default) for name in signature.outputs]
    else:
        if not isinstance(raw_outputs, list):
            raise bad("'outputs' must be a list")
        outputs = []
        for raw in raw_outputs:
            if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
                raise bad("each requested output must be an object with a string 'name'")
            name = raw["name"]
            if name not in signature.outputs:
                raise bad(f"unknown output {name!r}; the model gives {sorted(signature.outputs)}")
            if any(name == done for done, _ in outputs):
                raise bad(f"output {name!r} is requested twice")
            oparams = _param(raw.get("parameters"), f"output {name!r}")
            if oparams.get("classification"):
                raise bad(f"output {name!r}: the classification extension is not supported")
            flag = _flag(oparams, "binary_data", f"output {name!r}")
            outputs.append((name, binary_default if flag is None else flag))

    timeout = params.get("timeout")
    if timeout is not None and (type(timeout) is not int or timeout < 0):
        raise bad("parameter 'timeout' must be a non-negative integer (microseconds)")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise bad("'id' must be a string")
    return InferRequest(request_id, inputs, batch or 1, outputs, timeout)
