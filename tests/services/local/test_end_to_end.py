"""End to end: the real local stack from the demo spec classifies the held-out digits through the gateway.

Images go in as PNG (8-bit), so each served prediction is compared with onnxruntime's on the very same
quantized tensor (exact equality), and the model file is checked to reproduce the accuracy recorded in
its metadata.yaml on the original floats: any accuracy difference is the PNG quantization, nothing else.
"""

from __future__ import annotations

import asyncio
import io
import sys

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import yaml
from PIL import Image

from mesh.spec import DEFAULT_SPEC_PATH
from services.local.supervisor import LocalStack, free_port

from .conftest import MODELS, until

sys.path.insert(0, str(MODELS))
from digits_data import load_split

ROUTE = "/v1/digits:classify"
API_KEY = "e2e-test-key"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    """The demo spec, copied so the canary test can edit it (its `../models` still resolves)."""
    root = tmp_path_factory.mktemp("stack")
    (root / "models").symlink_to(MODELS)
    (root / "mesh").mkdir()
    spec = root / "mesh" / "mesh.yaml"
    spec.write_text(DEFAULT_SPEC_PATH.read_text())
    with LocalStack(
        spec, run_dir=root / "run", gateway_port=free_port(), env={"MESHSERVE_API_KEY": API_KEY}, grace=5
    ) as running:
        yield running


def quantize(images: np.ndarray) -> np.ndarray:
    """[N,1,8,8] floats in [0, 1] -> uint8 [N,8,8], as a PNG stores them."""
    return np.clip(np.rint(images[:, 0] * 255.0), 0, 255).astype(np.uint8)


def encode_png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(out, format="PNG")
    return out.getvalue()


def onnx_predictions(version: int, tensor: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(MODELS / "digits" / str(version) / "model.onnx"), options)
    return np.concatenate([session.run(None, {"input": tensor[i : i + 1]})[0] for i in range(len(tensor))]).argmax(1)


async def classify_all(base: str, images: list[bytes], version: int) -> list[tuple[int, dict]]:
    limit = asyncio.Semaphore(8)
    headers = {"apikey": API_KEY, "content-type": "image/png", "x-model-version": f"v{version}"}
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:

        async def one(i: int, body: bytes) -> tuple[int, dict]:
            async with limit:
                reply = await client.post(
                    ROUTE, content=body, headers={**headers, "x-request-id": f"e2e-{version}-{i}"}
                )
            assert reply.status_code == 200, reply.text
            assert reply.headers["x-model-version"] == str(version)
            assert reply.headers["x-request-id"] == f"e2e-{version}-{i}"
            return int(reply.headers["x-model-version"]), reply.json()

        return await asyncio.gather(*(one(i, body) for i, body in enumerate(images)))


@pytest.mark.parametrize("version", [1, 2])
def test_held_out_digits_through_the_gateway(stack: LocalStack, version: int) -> None:
    _, _, x_test, y_test = load_split()
    pixels = quantize(x_test)
    served = asyncio.run(classify_all(stack.url("gateway"), [encode_png(p) for p in pixels], version))
    predicted = np.array([int(body["label"]) for _, body in served])
    assert all(body["model_version"] == str(version) and len(body["top_k"]) == 3 for _, body in served)

    # the same tensor the preprocess stage makes: uint8 value * float32(1/255)
    expected = onnx_predictions(version, pixels[:, None].astype(np.float32) * np.float32(1.0 / 255.0))
    assert (predicted == expected).all(), f"{int((predicted != expected).sum())} predictions differ from onnxruntime"

    metadata = yaml.safe_load((MODELS / "digits" / str(version) / "metadata.yaml").read_text())["held_out"]
    recorded = metadata["accuracy"]
    assert (onnx_predictions(version, x_test) == y_test).mean() == pytest.approx(
        recorded
    )  # the model is the one measured
    served_accuracy = float((predicted == y_test).mean())
    print(f"digits v{version}: served accuracy {served_accuracy:.4f} (PNG 8-bit inputs), recorded {recorded:.4f}")
    assert abs(served_accuracy - recorded) <= 2 / len(y_test)  # quantization moves at most a couple of images


def test_bad_image_is_a_4xx_through_the_whole_path(stack: LocalStack) -> None:
    reply = httpx.post(
        stack.url("gateway") + ROUTE, content=b"not a png", headers={"apikey": API_KEY, "content-type": "image/png"}
    )
    assert reply.status_code == 400 and "not an image" in reply.json()["error"]
    assert reply.headers["x-request-id"]
    unknown = httpx.post(
        stack.url("gateway") + ROUTE, content=b"{}", headers={"apikey": API_KEY, "x-model-version": "9"}
    )
    assert unknown.status_code == 404 and "no version v9" in unknown.json()["error"]


def test_canary_promote_and_rollback_apply_live(stack: LocalStack) -> None:
    """`meshserve canary` edits the running stack's mesh.yaml; unpinned requests follow within seconds."""
    from services.cli import main

    body = encode_png(quantize(load_split()[2][:1])[0])
    url = stack.url("gateway") + ROUTE

    def versions_seen(n: int = 20) -> set[str]:
        with httpx.Client(timeout=10) as client:
            replies = [
                client.post(url, content=body, headers={"apikey": API_KEY, "content-type": "image/png"})
                for _ in range(n)
            ]
        assert all(r.status_code == 200 for r in replies), [r.text for r in replies if r.status_code != 200]
        return {r.headers["x-model-version"] for r in replies}

    assert main(["canary", "--spec", str(stack.spec_path), "promote", "digits", "v2"]) == 0
    until(lambda: versions_seen() == {"2"}, 10, "every unpinned request reaches v2 after promote")
    assert main(["canary", "--spec", str(stack.spec_path), "rollback", "digits"]) == 0  # v2 is now the stable
    assert main(["canary", "--spec", str(stack.spec_path), "promote", "digits", "1"]) == 0
    until(lambda: versions_seen() == {"1"}, 10, "every unpinned request reaches v1 after promoting it back")
