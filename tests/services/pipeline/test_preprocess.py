"""image-preprocess: image decoding, resize/normalize math, the wire formats, and clear 4xx for bad input."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from services.pipeline import preprocess
from services.pipeline.preprocess import Params, array_image, build_app, decode_image, to_tensor

DIGITS = Params(height=8, width=8, channels=1, scale=1.0)


PNG = {"content-type": "image/png"}


def png(pixels: np.ndarray, mode: str = "L", fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), mode=mode).save(out, format=fmt)
    return out.getvalue()


BROKEN_PNG = png(np.random.default_rng(0).integers(0, 255, (64, 64)))[:300]


@pytest.fixture(scope="module")
def client() -> TestClient:
    with TestClient(build_app("test-preprocess", DIGITS)) as c:
        yield c


def test_same_size_is_value_over_255_times_scale() -> None:
    pixels = np.arange(64, dtype=np.float32).reshape(8, 8) * 4
    tensor = to_tensor(array_image(pixels.tolist(), 1), DIGITS)
    assert tensor.shape == (1, 1, 8, 8) and tensor.dtype == np.float32
    np.testing.assert_allclose(tensor[0, 0], pixels / 255.0, rtol=1e-6)
    doubled = to_tensor(array_image(pixels.tolist(), 1), Params(8, 8, 1, scale=2.0))
    np.testing.assert_allclose(doubled, tensor * 2, rtol=1e-6)


def test_resize_keeps_constant_regions_and_channel_order() -> None:
    rgb = np.zeros((32, 16, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 10, 100, 200
    tensor = to_tensor(decode_image(png(rgb, "RGB"), 3), Params(height=4, width=6, channels=3))
    assert tensor.shape == (1, 3, 4, 6)
    np.testing.assert_allclose(tensor[0, :, 2, 3], [10 / 255, 100 / 255, 200 / 255], rtol=1e-5)
    # a left/right split stays a left/right split after downscaling
    half = np.zeros((16, 16), dtype=np.float32)
    half[:, 8:] = 255
    small = to_tensor(array_image(half.tolist(), 1), DIGITS)[0, 0]
    assert (small[:, :3] == 0).all() and np.allclose(small[:, 5:], 1.0)


def test_grayscale_array_becomes_rgb_for_three_channels() -> None:
    tensor = to_tensor(array_image([[0, 255], [255, 0]], 3), Params(2, 2, 3))
    assert tensor.shape == (1, 3, 2, 2)
    assert (tensor[0, 0] == tensor[0, 2]).all()


def test_png_base64_and_array_give_the_same_tensor(client: TestClient) -> None:
    pixels = (np.random.default_rng(0).random((8, 8)) * 255).astype(np.uint8)
    data = png(pixels)
    raw = client.post("/v1/preprocess", content=data, headers={"content-type": "image/png"})
    b64 = client.post("/v1/preprocess", json={"image_b64": base64.b64encode(data).decode()})
    arr = client.post("/v1/preprocess", json={"image": pixels.tolist()})
    assert raw.status_code == b64.status_code == arr.status_code == 200
    body = raw.json()
    assert body["name"] == "input" and body["datatype"] == "FP32" and body["shape"] == [1, 1, 8, 8]
    np.testing.assert_allclose(body["data"], (pixels / 255.0).ravel(), rtol=1e-6)
    assert raw.json() == b64.json() == arr.json()


def test_binary_answer(client: TestClient) -> None:
    pixels = np.full((8, 8), 51, dtype=np.uint8)
    reply = client.post("/v1/preprocess", content=png(pixels), headers={**PNG, "accept": "application/octet-stream"})
    assert reply.status_code == 200
    assert reply.headers["x-tensor-shape"] == "1,1,8,8" and reply.headers["x-tensor-datatype"] == "FP32"
    np.testing.assert_allclose(np.frombuffer(reply.content, "<f4"), np.full(64, 0.2, np.float32), rtol=1e-6)


def test_jpeg_is_accepted(client: TestClient) -> None:
    pixels = np.full((16, 16), 128, dtype=np.uint8)
    reply = client.post("/v1/preprocess", content=png(pixels, fmt="JPEG"), headers={"content-type": "image/jpeg"})
    assert reply.status_code == 200
    np.testing.assert_allclose(reply.json()["data"], np.full(64, 128 / 255), atol=2 / 255)


@pytest.mark.parametrize(
    ("kwargs", "status", "message"),
    [
        ({"content": b"", "headers": {"content-type": "image/png"}}, 400, "empty image"),
        ({"content": b"", "headers": {"content-type": "application/json"}}, 400, "empty body"),
        ({"content": b"hello", "headers": {"content-type": "image/png"}}, 400, "not an image"),
        ({"content": BROKEN_PNG, "headers": PNG}, 400, "broken image"),
        ({"content": b"x,y", "headers": {"content-type": "text/csv"}}, 415, "not accepted"),
        ({"content": b"{", "headers": {"content-type": "application/json"}}, 400, "not valid JSON"),
        ({"json": {"picture": [[1]]}}, 400, '"image"'),
        ({"json": {"image": [1, 2, 3]}}, 400, "shape [3]"),
        ({"json": {"image": [[1, 2], [3]]}}, 400, "rectangular"),
        ({"json": {"image": [[[1, 2]]]}}, 400, "shape [1, 1, 2]"),
        ({"json": {"image": [[300, 0]]}}, 400, "[0, 255]"),
        ({"json": {"image": [["a"]]}}, 400, "rectangular array of numbers"),
        ({"json": {"image_b64": "***"}}, 400, "not valid base64"),
    ],
)
def test_bad_input_is_a_clear_4xx(client: TestClient, kwargs: dict, status: int, message: str) -> None:
    reply = client.post("/v1/preprocess", **kwargs)
    assert reply.status_code == status, reply.text
    assert message in reply.json()["error"]


def test_gif_is_refused_with_415(client: TestClient) -> None:
    gif = png(np.zeros((8, 8)), fmt="GIF")
    reply = client.post("/v1/preprocess", content=gif, headers={"content-type": "image/gif"})
    assert reply.status_code == 415 and "GIF" in reply.json()["error"]


def test_too_large(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preprocess, "MAX_PIXELS", 100)
    reply = client.post("/v1/preprocess", content=png(np.zeros((11, 11))), headers={"content-type": "image/png"})
    assert reply.status_code == 413 and "at most 100 pixels" in reply.json()["error"]
    assert client.post("/v1/preprocess", json={"image": np.zeros((11, 11)).tolist()}).status_code == 413
    monkeypatch.setattr(preprocess, "MAX_BODY_BYTES", 10)
    reply = client.post("/v1/preprocess", content=b"x" * 11, headers={"content-type": "image/png"})
    assert reply.status_code == 413 and "the limit is 10" in reply.json()["error"]


def test_health(client: TestClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/ready").json()["status"] == "ready"
    assert "meshserve_http_requests_total" in client.get("/metrics").text


def test_a_4096_square_png_is_refused_from_its_header_naming_the_limit(client: TestClient) -> None:
    """A 4096 x 4096 PNG is ~50 KB on the wire and 16.8 M pixels decoded: refused before decoding."""
    big = png(np.zeros((4096, 4096)))
    assert len(big) < preprocess.MAX_BODY_BYTES
    reply = client.post("/v1/preprocess", content=big, headers=PNG)
    assert reply.status_code == 413, reply.text
    assert f"at most {preprocess.MAX_PIXELS} pixels" in reply.json()["error"] and "4096x4096" in reply.json()["error"]


def test_images_are_decoded_off_the_event_loop(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    seen: list[bool] = []
    original = preprocess.decode_image

    def recording(data: bytes, channels: int) -> np.ndarray:
        try:
            asyncio.get_running_loop()
            seen.append(True)
        except RuntimeError:
            seen.append(False)
        return original(data, channels)

    monkeypatch.setattr(preprocess, "decode_image", recording)
    assert client.post("/v1/preprocess", content=png(np.zeros((8, 8))), headers=PNG).status_code == 200
    assert seen == [False]  # no running loop in the thread that decoded


def test_an_endless_chunked_body_is_413_as_soon_as_it_passes_the_limit(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(preprocess, "MAX_BODY_BYTES", 1000)
    sent = [0]

    def endless():
        while sent[0] < 10_000_000:
            sent[0] += 100
            yield b"x" * 100

    reply = client.post("/v1/preprocess", content=endless(), headers=PNG)
    assert reply.status_code == 413 and "over the limit of 1000 bytes" in reply.json()["error"]
