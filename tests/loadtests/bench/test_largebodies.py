"""The large-bodies benchmark's request: about 10 MB, decoded in full, then refused for its count."""

from __future__ import annotations

import pytest

from loadtests.bench.largebodies import LARGE_NUMBERS, large_body
from services.common.errors import ProtocolError
from services.modelserver.codec import decode_request
from services.modelserver.signature import Signature, TensorSig


def test_the_large_body_costs_a_full_decode_and_is_refused() -> None:
    body = large_body()
    assert 9_000_000 < len(body) < 11_000_000
    digits = Signature(inputs={"input": TensorSig("input", "FP32", (-1, 1, 8, 8))}, outputs={}, max_batch_size=64)
    with pytest.raises(ProtocolError) as err:
        decode_request(body, memoryview(b""), digits)
    assert err.value.status == 400
    assert err.value.message == f"input 'input': data has {LARGE_NUMBERS} elements, the shape needs 64"
