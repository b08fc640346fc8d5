"""jsonload's large-body path: no array simdjson cannot count reaches pysimdjson's as_list(), and the
nesting of numeric data is read from its brackets exactly as numpy would read the lists."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.errors import ProtocolError
from services.modelserver import jsonload
from services.modelserver.codec import decode_request
from services.modelserver.signature import Signature, TensorSig

OVER = jsonload.SATURATED + 1_000  # past the count simdjson can hold


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=600)


def test_upstream_as_list_corrupts_the_heap_past_2_to_the_24() -> None:
    """Why the guard exists (pysimdjson 7.0.2); in a subprocess, since it aborts the interpreter."""
    done = _run(f"""
        import simdjson
        array = simdjson.Parser().parse(b"[" + b"0," * {OVER - 1} + b"0]")
        print(len(array))
        print(len(array.as_list()))
    """)
    if done.returncode == 0 and done.stdout.split() == [str(OVER)] * 2:
        pytest.skip("this pysimdjson counts long arrays correctly: the guard is now only a safety net")
    assert done.returncode != 0 or done.stdout.split()[0] != str(OVER), done.stdout


def test_a_data_array_past_2_to_the_24_decodes_or_is_refused_without_crashing() -> None:
    """The reproducing body through the real decoder, in a subprocess so that a crash is a failure,
    not the end of the test run: a shape that does not match is a 400 naming the count, a matching
    flat tensor decodes exactly."""
    done = _run(f"""
        import numpy as np
        from services.common.errors import ProtocolError
        from services.modelserver.codec import decode_request
        from services.modelserver.signature import Signature, TensorSig
        sig = Signature(inputs={{"x": TensorSig("x", "FP32", (-1,))}}, outputs={{}}, max_batch_size=0)
        sig4 = Signature(inputs={{"x": TensorSig("x", "FP32", (1, 4))}}, outputs={{}}, max_batch_size=0)
        data = b"[" + b"0," * {OVER - 1} + b"1]"
        good = b'{{"inputs":[{{"name":"x","datatype":"FP32","shape":[{OVER}],"data":' + data + b'}}]}}'
        x = decode_request(good, memoryview(b""), sig).inputs["x"]
        print(x.shape[0], x.dtype, float(x.sum()))
        bad = b'{{"inputs":[{{"name":"x","datatype":"FP32","shape":[1,4],"data":' + data + b'}}]}}'
        try:
            decode_request(bad, memoryview(b""), sig4)
        except ProtocolError as exc:
            print(exc.status, exc.message)
        strings = b'{{"inputs":[{{"name":"x","datatype":"FP32","shape":[1,4],"data":[' + b'"",' * {OVER} + b'""]}}]}}'
        try:
            decode_request(strings, memoryview(b""), sig4)
        except ProtocolError as exc:
            print(exc.status, exc.message)
    """)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0] == f"{OVER} float32 1.0"
    assert lines[1] == f"400 input 'x': data has {OVER} elements, the shape needs 4"
    assert lines[2].startswith("400 a JSON array has 16,777,215 or more elements") and "binary" in lines[2]


def test_guarded_walk_refuses_arrays_it_cannot_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """The walk used for bodies of SAFE_BYTES and more, with the saturation point moved down to 5."""
    monkeypatch.setattr(jsonload, "LARGE", 0)
    monkeypatch.setattr(jsonload, "SAFE_BYTES", 0)
    monkeypatch.setattr(jsonload, "SATURATED", 5)
    sig = Signature(inputs={"x": TensorSig("x", "FP32", (-1, 2))}, outputs={}, max_batch_size=0)
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [3, 2], "data": [[1, 2], [3, 4], [5, 6]]}]}
    got = decode_request(json.dumps(body).encode(), memoryview(b""), sig).inputs["x"]
    np.testing.assert_array_equal(got, [[1, 2], [3, 4], [5, 6]])
    flat = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [3, 2], "data": [1, 2, 3, 4, 5, 6]}]}
    got = decode_request(json.dumps(flat).encode(), memoryview(b""), sig).inputs["x"]  # len() saturated: by brackets
    np.testing.assert_array_equal(got, [[1, 2], [3, 4], [5, 6]])
    for hostile in (
        {**body, "parameters": {"p": list(range(9))}},  # a long array where no data is expected
        {"inputs": [{**body["inputs"][0], "data": [None] * 9}]},  # non-numeric data: walked, not buffered
        {"inputs": [{**body["inputs"][0], "data": [[0] * 2, [[]] * 9, [0] * 2]}]},  # nested past the count
    ):
        with pytest.raises(ProtocolError) as err:
            decode_request(json.dumps(hostile).encode(), memoryview(b""), sig)
        assert err.value.status == 400


def test_declared_count_is_checked_against_the_body_before_converting() -> None:
    sig = Signature(inputs={"x": TensorSig("x", "FP32", (-1, -1))}, outputs={}, max_batch_size=0)
    for shape in ([1, 2**24], [1, 2**31], [2**40, 2**40]):
        body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": shape, "data": [0]}]}).encode()
        with pytest.raises(ProtocolError) as err:
            decode_request(body, memoryview(b""), sig)
        assert err.value.status == 400
        assert f"needs {shape[0] * shape[1]} elements, a JSON body of {len(body)} bytes holds at most" in str(err.value)


_leaf = st.integers(-5, 5)
_nested = st.recursive(st.lists(_leaf, max_size=4), lambda inner: st.lists(inner, max_size=3), max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(value=_nested)
def test_nested_shape_is_numpys(value: list) -> None:
    try:
        expected = np.array(value).shape
        if np.array(value).dtype == object:
            expected = None
    except ValueError:
        expected = None
    text = json.dumps(value, separators=(",", ":")).encode()
    assert jsonload.nested_shape(text) == expected


def test_a_shape_of_a_million_dims_costs_no_bigint_product(monkeypatch: pytest.MonkeyPatch) -> None:
    """2 ** 1,000,000 would take minutes of multiplication: the rank is checked first, on both paths."""
    monkeypatch.setattr(jsonload, "LARGE", 0)
    sig = Signature(inputs={"x": TensorSig("x", "FP32", (-1, -1))}, outputs={}, max_batch_size=0)
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2] * 1_000_000, "data": [0, 1]}]})
    with pytest.raises(ProtocolError) as err:
        decode_request(body.encode(), memoryview(b""), sig)
    assert err.value.status == 400 and "does not match the model's [-1, -1]" in str(err.value)
    assert len(str(err.value)) < 300


@pytest.mark.parametrize("large", [False, True])
def test_a_key_given_twice_reads_the_same_on_both_paths(large: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """orjson keeps the last of duplicate keys, a simdjson lookup finds the first: the large path hands
    such a body to orjson, so what the server decodes never depends on the body's size."""
    monkeypatch.setattr(jsonload, "LARGE", 0 if large else 1 << 60)
    sig = Signature(inputs={"x": TensorSig("x", "FP32", (-1, 2))}, outputs={}, max_batch_size=0)
    body = b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1,2],"data":[1,2],"data":[3,4]}]}'
    np.testing.assert_array_equal(decode_request(body, memoryview(b""), sig).inputs["x"], [[3, 4]])
    twice = b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1,2],"data":[1,2]}],"inputs":[]}'
    with pytest.raises(ProtocolError, match="non-empty list"):
        decode_request(twice, memoryview(b""), sig)
