"""The Open Inference Protocol (v2) on the wire, both sides, and the raw tensor frame between pipeline stages.

The binary tensor data extension, exactly as tritonclient.http speaks it: a JSON header whose length
is in `Inference-Header-Content-Length`, then raw tensors in the order of the JSON's inputs (request)
or outputs (response), each sized by `parameters.binary_data_size`; numbers little-endian, BYTES
elements each behind a 4-byte little-endian length prefix. One module owns the header-length split,
the offset walk and the tensor reading and writing for every reader and writer: the model server
(`split_body`, `read_tensor`, `write_response`; its signature checks stay in modelserver/codec.py),
the pipeline calling a model (`write_request`, `read_response`) and the gateway comparing mirrored
answers (`read_response`). Every failure is a ProtocolError(400) whose message names the tensor and
what was wrong; a caller that reads an upstream's answer turns it into its own status.

The protocol's model paths, /v2/models/<m>[/versions/<v>][/<rest>], are read here too
(`split_model_path`): the gateway routes by them and the model server serves infer at them.

The raw frame (`x-tensor-shape: 1,1,8,8` + raw little-endian FP32 bytes, `raw_headers`/`read_raw`)
stays the pipeline's stage-to-stage format, by measurement (loadtests/bench/wire.py): one FP32
tensor per hop needs no JSON header, and writing + reading the frame costs about half of the v2
binary encoding of the same tensor (write_response + read_response): 3.3 against 5.2 us for
[1,1,8,8], 2.6 against 5.2 us for [1,10], 18.8 against 21.9 us for a [1,3,224,224] image (best of
five runs on a loaded machine, Python 3.11). Model calls use the v2 encoding.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence

import numpy as np
import orjson

from services.common.datatypes import V2_TO_NUMPY
from services.common.errors import ProtocolError, quoted

MODELS_PREFIX = "/v2/models/"


def split_model_path(path: str) -> tuple[str, str | None, str]:
    """/v2/models/<m>[/versions/<v>][/rest] -> (model, version or None, rest); `path` starts with MODELS_PREFIX."""
    parts = path[len(MODELS_PREFIX) :].split("/", 3)
    model = parts[0]
    if len(parts) >= 3 and parts[1] == "versions":
        return model, parts[2], "/".join(parts[3:])
    return model, None, "/".join(parts[1:])


HEADER_LENGTH = "inference-header-content-length"
OCTET = "application/octet-stream"
JSON = "application/json"
SHAPE_HEADER = "x-tensor-shape"
DATATYPE_HEADER = "x-tensor-datatype"

_NUMPY_OPT = orjson.OPT_SERIALIZE_NUMPY
_LEN = struct.Struct("<I")
_NUMPY_TO_V2 = {dtype: name for name, dtype in V2_TO_NUMPY.items() if name != "BYTES"}


def bad(message: str) -> ProtocolError:
    return ProtocolError(400, message)


# ---------------------------------------------------------------- reading: body, offsets, tensors


def split_body(body: bytes, header_length: str | None) -> tuple[bytes | memoryview, memoryview]:
    """JSON header and binary tail; `header_length` is the Inference-Header-Content-Length value."""
    if header_length is None:
        return body, memoryview(b"")
    try:
        if len(header_length) > 18:  # past any body size, and int() of 4,300+ digits raises anyway
            raise ValueError
        n = int(header_length)
    except ValueError:
        raise bad(
            f"Inference-Header-Content-Length {quoted(header_length)} is not an integer of at most 18 digits"
        ) from None
    if n < 0 or n > len(body):
        raise bad(f"Inference-Header-Content-Length is {n} but the body has only {len(body)} bytes")
    view = memoryview(body)
    return view[:n], view[n:]


def read_tensor(
    name: str,
    datatype: str,
    tail: memoryview,
    offset: int,
    size: object,
    count: int,
    kind: str = "input",
    size_field: str = "binary_data_size is",
) -> np.ndarray:
    """The flat tensor at `tail[offset:offset + size]` (`size` as the JSON gave binary_data_size),
    numeric without a copy; the caller advances its offset by `size`. `datatype` is a v2 name the
    caller has checked. gRPC's raw contents are one tensor: offset 0, size = its length."""
    if type(size) is not int or size < 0:
        raise bad(f"{kind} {name!r}: binary_data_size must be a non-negative integer")
    end = offset + size
    if end > len(tail):
        raise bad(
            f"{kind} {name!r}: binary_data_size {size} runs past the end of the body "
            f"({len(tail) - offset} binary bytes left)"
        )
    if datatype == "BYTES":
        return _strings_from_binary(name, tail[offset:end], count, kind)
    dtype = V2_TO_NUMPY[datatype]
    if size != count * dtype.itemsize:
        raise bad(
            f"{kind} {name!r}: {size_field} {size} bytes, {count} {datatype} elements need {count * dtype.itemsize}"
        )
    return np.frombuffer(tail[offset:end], dtype=dtype, count=count)


def _strings_from_binary(name: str, raw: memoryview, count: int, kind: str) -> np.ndarray:
    items: list[str] = []
    offset, end = 0, len(raw)
    while offset < end:
        if offset + 4 > end:
            raise bad(f"{kind} {name!r}: truncated BYTES length prefix at byte {offset}")
        (n,) = _LEN.unpack_from(raw, offset)
        offset += 4
        if offset + n > end:
            raise bad(f"{kind} {name!r}: BYTES element of {n} bytes runs past the tensor's data")
        try:
            items.append(str(raw[offset : offset + n], "utf-8"))
        except UnicodeDecodeError:
            raise bad(f"{kind} {name!r}: BYTES element {len(items)} is not UTF-8 (ONNX strings are)") from None
        offset += n
    if len(items) != count:
        raise bad(f"{kind} {name!r}: binary data has {len(items)} BYTES elements, the shape needs {count}")
    return object_array(items)


def object_array(items: list) -> np.ndarray:
    """A flat object array of `items` (np.array would nest lists and guess a string dtype)."""
    arr = np.empty(len(items), dtype=object)
    arr[:] = items
    return arr


def read_response(body: bytes, header_length: str | None) -> dict[str, np.ndarray]:
    """A v2 infer response's outputs in order, name -> array in its shape (binary extension or JSON);
    binary outputs are views of `body`. For clients of a model server: ProtocolError(400) on a body
    that is not a v2 infer response."""
    header, tail = split_body(body, header_length)
    try:
        doc = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        raise bad(f"malformed JSON in the response header: {exc}") from None
    outputs = doc.get("outputs") if isinstance(doc, dict) else None
    if not isinstance(outputs, list):
        raise bad(f"not a v2 infer response: no 'outputs' list in {quoted(bytes(header).decode('utf-8', 'replace'))}")
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for entry in outputs:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise bad("each output must be an object with a string 'name'")
        name, datatype, raw_shape = entry["name"], entry.get("datatype"), entry.get("shape")
        if datatype not in V2_TO_NUMPY:
            raise bad(f"output {name!r}: unknown datatype {datatype!r}")
        if not isinstance(raw_shape, list) or not all(type(d) is int and d >= 0 for d in raw_shape):
            raise bad(f"output {name!r}: shape must be a list of non-negative integers")
        count = math.prod(raw_shape)
        params = entry.get("parameters") or {}
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is not None:
            flat = read_tensor(name, datatype, tail, offset, size, count, "output")
            offset += size
        elif "data" in entry:
            flat = _json_values(name, datatype, entry["data"], count)
        else:
            raise bad(f"output {name!r} has neither 'data' nor parameters.binary_data_size")
        arrays[name] = flat.reshape(raw_shape)
    if offset != len(tail):
        raise bad(f"the body has {len(tail) - offset} binary bytes that no output's binary_data_size claims")
    return arrays


def _json_values(name: str, datatype: str, data: object, count: int) -> np.ndarray:
    """A JSON output's `data` (flat or nested) as a flat array; "NaN"/"Infinity" strings read as floats."""
    try:
        if datatype == "BYTES":
            flat = object_array(np.asarray(data, dtype=object).reshape(-1).tolist())
        else:
            flat = np.asarray(data, dtype=V2_TO_NUMPY[datatype]).reshape(-1)
    except (ValueError, TypeError, OverflowError) as exc:
        raise bad(f"output {name!r}: data is not a {datatype} tensor ({exc})") from None
    if flat.size != count:
        raise bad(f"output {name!r}: data has {flat.size} elements, the shape needs {count}")
    return flat


# ---------------------------------------------------------------- writing


def strings_to_binary(arr: np.ndarray) -> bytes:
    """BYTES elements (str or bytes) each behind its 4-byte little-endian length."""
    parts: list[bytes] = []
    for item in arr.reshape(-1):
        raw = item if isinstance(item, bytes) else str(item).encode()
        parts.append(_LEN.pack(len(raw)))
        parts.append(raw)
    return b"".join(parts)


def datatype_of(arr: np.ndarray) -> str:
    """The v2 datatype of a numpy array: strings and objects are BYTES."""
    if arr.dtype.kind in "OUS":
        return "BYTES"
    try:
        return _NUMPY_TO_V2[arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype]
    except KeyError:
        raise ValueError(f"numpy dtype {arr.dtype} has no v2 datatype") from None


def _spell_non_finite(described: list[dict]) -> bool:
    """JSON has no NaN or infinity (orjson would write null, which reads back as "missing"): such values
    go as the strings "NaN", "Infinity", "-Infinity", which numpy, and so tritonclient's as_numpy(), reads
    back as the same floats. Binary outputs carry them as they are. True if any value was replaced."""
    replaced = False
    for entry in described:
        flat = entry.get("data")
        if not isinstance(flat, np.ndarray) or flat.dtype.kind != "f":
            continue
        bad_at = np.flatnonzero(~np.isfinite(flat)).tolist()
        if not bad_at:
            continue
        values = flat.tolist()
        for i in bad_at:
            value = values[i]
            values[i] = "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
        entry["data"] = values
        replaced = True
    return replaced


def _json_data(datatype: str, arr: np.ndarray) -> object:
    """A tensor's values for a JSON `data` field: flat, numbers as numpy (orjson writes them), BYTES as str.
    (write_response spells the same inline: it runs per request on the model server.)"""
    if datatype == "BYTES":
        return [x if isinstance(x, str) else bytes(x).decode("utf-8", "replace") for x in arr.flat]
    return np.ascontiguousarray(arr).reshape(-1)


def write_response(
    model: str,
    version: str,
    request_id: str | None,
    outputs: list[tuple[str, str, np.ndarray, bool]],
) -> tuple[bytes, int | None]:
    """The server side: a response body from (name, datatype, array, binary) outputs and, when any
    output travels binary, the JSON header's length for Inference-Header-Content-Length.

    The model server's REST infer path runs this once per request: the loop stays flat (no call per
    output beyond the array views) and binary numeric outputs are joined from views, copied once."""
    described = []
    blobs: list[bytes | memoryview] = []
    for name, datatype, arr, binary in outputs:
        entry: dict = {"name": name, "datatype": datatype, "shape": arr.shape}
        if binary:
            blob = strings_to_binary(arr) if datatype == "BYTES" else memoryview(np.ascontiguousarray(arr)).cast("B")
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        elif datatype == "BYTES":
            entry["data"] = [x if isinstance(x, str) else bytes(x).decode("utf-8", "replace") for x in arr.flat]
        else:
            entry["data"] = np.ascontiguousarray(arr).reshape(-1)
        described.append(entry)
    doc: dict = {"model_name": model, "model_version": version, "outputs": described}
    if request_id is not None:
        doc["id"] = request_id
    header = orjson.dumps(doc, option=_NUMPY_OPT)
    if b"null" in header and _spell_non_finite(described):  # orjson writes NaN/inf as null: rare, so checked after
        header = orjson.dumps(doc, option=_NUMPY_OPT)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def write_request(
    inputs: Mapping[str, np.ndarray],
    outputs: Sequence[str] = (),
    *,
    binary: bool = True,
    binary_outputs: bool = True,
    request_id: str | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The client side: an infer request body and its headers, as tritonclient.http writes them
    (`binary`: inputs in the binary extension; `binary_outputs`: ask for binary outputs, each named
    one, or all of them with `binary_data_output` when none is named). Datatypes follow the arrays'."""
    described = []
    blobs: list[bytes | memoryview] = []
    for name, tensor in inputs.items():
        datatype = datatype_of(tensor)
        entry: dict = {"name": name, "shape": list(tensor.shape), "datatype": datatype}
        if binary:
            if datatype == "BYTES":
                blob: bytes | memoryview = strings_to_binary(tensor)
            else:
                blob = memoryview(np.ascontiguousarray(tensor, dtype=V2_TO_NUMPY[datatype])).cast("B")
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = _json_data(datatype, tensor)
        described.append(entry)
    doc: dict = {"inputs": described}
    if request_id is not None:
        doc["id"] = request_id
    if outputs:
        doc["outputs"] = [{"name": o, "parameters": {"binary_data": binary_outputs}} for o in outputs]
    elif binary_outputs:
        doc["parameters"] = {"binary_data_output": True}
    header = orjson.dumps(doc, option=_NUMPY_OPT)
    if not blobs:
        return header, {"content-type": JSON}
    return b"".join([header, *blobs]), {HEADER_LENGTH: str(len(header)), "content-type": OCTET}


# ---------------------------------------------------------------- the raw frame between pipeline stages


def shape_header(shape: tuple[int, ...]) -> str:
    return ",".join(str(d) for d in shape)


def raw_headers(shape: tuple[int, ...]) -> dict[str, str]:
    """The headers that go with a raw FP32 frame."""
    return {"content-type": OCTET, SHAPE_HEADER: shape_header(shape), DATATYPE_HEADER: "FP32"}


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in text.split(","))
    except ValueError:
        raise bad(f"{SHAPE_HEADER} {quoted(text)} is not a comma-separated list of sizes") from None
    if not shape or any(d < 0 for d in shape):
        raise bad(f"{SHAPE_HEADER} {quoted(text)} is not a shape")
    return shape


def read_raw(body: bytes, shape_text: str | None) -> np.ndarray:
    """Raw FP32 bytes + x-tensor-shape -> array (a view of `body`); the sizes must agree."""
    if shape_text is None:
        raise bad(f"a binary tensor needs the {SHAPE_HEADER} header, e.g. '1,10'")
    shape = parse_shape(shape_text)
    expected = 4 * math.prod(shape)
    if len(body) != expected:
        raise bad(f"{len(body)} bytes do not hold an FP32 tensor of shape {list(shape)} ({expected} bytes)")
    return np.frombuffer(body, dtype="<f4").reshape(shape)
