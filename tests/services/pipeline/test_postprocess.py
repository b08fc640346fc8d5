"""classification-postprocess: softmax/top-k math, labels, both input forms, and clear 4xx for bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from mesh.spec import DEFAULT_SPEC_PATH
from services.pipeline.postprocess import build_app, classify, load_labels, softmax, top_k

LABELS = load_labels(DEFAULT_SPEC_PATH.parent.parent / "models" / "digits" / "labels.txt")


@pytest.fixture(scope="module")
def client() -> TestClient:
    with TestClient(build_app("test-postprocess", 3, LABELS)) as c:
        yield c


def test_softmax() -> None:
    logits = np.array([[1.0, 2.0, 3.0], [1000.0, 0.0, -1000.0]], dtype=np.float32)
    probs = softmax(logits)
    np.testing.assert_allclose(probs.sum(axis=1), [1.0, 1.0])
    e = np.exp([1.0, 2.0, 3.0])
    np.testing.assert_allclose(probs[0], e / e.sum())
    assert np.isfinite(probs).all() and probs[1, 0] == pytest.approx(1.0)


def test_top_k_orders_and_labels() -> None:
    probs = np.array([[0.1, 0.5, 0.1, 0.3]])
    (first,) = top_k(probs, 3, ("a", "b", "c", "d"))
    assert [p["label"] for p in first["top_k"]] == ["b", "d", "a"]  # the 0.1 tie goes to the lower index
    assert first["label"] == "b" and first["index"] == 1 and first["score"] == 0.5
    assert len(top_k(probs, 10, None)[0]["top_k"]) == 4  # k beyond the classes is clamped
    assert top_k(probs, 1, None)[0]["label"] == "1"  # without labels, class numbers


def test_labels_file() -> None:
    assert tuple(str(d) for d in range(10)) == LABELS
    assert load_labels(Path("/nonexistent/labels.txt")) is None


def test_json_and_binary_inputs_agree(client: TestClient) -> None:
    logits = np.random.default_rng(1).normal(size=(2, 10)).astype(np.float32)
    as_json = client.post("/v1/postprocess", json={"logits": logits.tolist()})
    as_binary = client.post(
        "/v1/postprocess",
        content=logits.tobytes(),
        headers={"content-type": "application/octet-stream", "x-tensor-shape": "2,10"},
    )
    assert as_json.status_code == as_binary.status_code == 200
    predictions = as_binary.json()["predictions"]
    assert [p["index"] for p in predictions] == logits.argmax(axis=1).tolist()
    assert len(predictions[0]["top_k"]) == 3
    for got, want in zip(as_json.json()["predictions"], predictions, strict=True):
        assert got["label"] == want["label"] and got["score"] == pytest.approx(want["score"], rel=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {
                "content": np.array([np.inf, 0], np.float32).tobytes(),
                "headers": {"content-type": "application/octet-stream", "x-tensor-shape": "1,2"},
            },
            "finite",
        ),
        ({"content": b'{"logits": [[1, NaN]]}', "headers": {"content-type": "application/json"}}, "not valid JSON"),
        ({"json": {"logits": [[[1.0] * 10]]}}, "shape [1, 1, 10]"),
        ({"json": {"logits": [1.0, 2.0]}}, "2 classes but labels.txt lists 10"),
        ({"json": {"scores": [1.0]}}, '{"logits"'),
        ({"json": {"logits": [[1, 2], [3]]}}, "rectangular"),
        ({"content": b"\0" * 12, "headers": {"content-type": "application/octet-stream"}}, "x-tensor-shape"),
        (
            {"content": b"\0" * 12, "headers": {"content-type": "application/octet-stream", "x-tensor-shape": "1,10"}},
            "12 bytes do not hold an FP32 tensor of shape [1, 10]",
        ),
        (
            {"content": b"", "headers": {"content-type": "application/octet-stream", "x-tensor-shape": "a,b"}},
            "not a comma-separated list",
        ),
    ],
)
def test_bad_input_is_a_400(client: TestClient, kwargs: dict, message: str) -> None:
    reply = client.post("/v1/postprocess", **kwargs)
    assert reply.status_code == 400, reply.text
    assert message in reply.json()["error"]


def test_classify_checks_label_count() -> None:
    assert classify(np.zeros((1, 10), np.float32), 2, LABELS)[0]["score"] == pytest.approx(0.1)
