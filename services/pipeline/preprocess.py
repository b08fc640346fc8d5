"""image-preprocess: an image in, the model's input tensor out.

Accepts PNG/JPEG bytes as the raw body (Content-Type image/*), or JSON {"image": <2-D array, or
[H][W][C]>} / {"image_b64": "<base64 PNG/JPEG>"}. Pixel values are on the 8-bit scale [0, 255] in every
form, so a PNG and the same pixels as an array give the same tensor. Resized with Pillow (bilinear)
to the stage's height x width, then value / 255 * scale -> FP32 [1, channels, height, width].
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from PIL import Image, UnidentifiedImageError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from services.common.v2wire import OCTET, raw_headers
from services.pipeline.service import BadRequest, create_app, json_response, read_body

MAX_BODY_BYTES = 8 * 1024 * 1024
# Decoded pixels at most (a 2048 x 2048 image): a small compressed body can decode to gigabytes, and a
# 4096 x 4096 PNG took 250 ms to decode. Checked from the image header, before any pixel is decoded.
MAX_PIXELS = 2048 * 2048


@dataclass(frozen=True)
class Params:
    height: int
    width: int
    channels: int = 1
    scale: float = 1.0
    input_name: str = "input"

    @classmethod
    def from_spec(cls, params: dict[str, Any]) -> Params:
        known = {k: params[k] for k in ("height", "width", "channels", "scale", "input_name") if k in params}
        parsed = cls(**known)
        if parsed.channels not in (1, 3) or parsed.height < 1 or parsed.width < 1:
            raise ValueError(f"image-preprocess params {params}: channels must be 1 or 3, height and width >= 1")
        return parsed


def decode_image(data: bytes, channels: int) -> np.ndarray:
    """PNG/JPEG bytes -> float32 [H, W, C] on the 0..255 scale (grayscale for 1 channel, RGB for 3)."""
    if not data:
        raise BadRequest(400, "empty image: send PNG or JPEG bytes")
    try:
        image = Image.open(io.BytesIO(data))  # reads the header only
        if image.width * image.height > MAX_PIXELS:
            message = f"image is {image.width}x{image.height} pixels; at most {MAX_PIXELS} pixels are accepted"
            raise BadRequest(413, message)
        if image.format not in ("PNG", "JPEG"):
            raise BadRequest(415, f"{image.format} images are not accepted: send PNG or JPEG")
        image = image.convert("L" if channels == 1 else "RGB")
    except UnidentifiedImageError:
        raise BadRequest(400, "not an image: the body is neither PNG nor JPEG") from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise BadRequest(400, f"broken image: {exc}") from None
    pixels = np.asarray(image, dtype=np.float32)
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


def array_image(value: Any, channels: int) -> np.ndarray:
    """A JSON [H][W] (or [H][W][C]) array of 0..255 values -> float32 [H, W, C]."""
    try:
        pixels = np.asarray(value, dtype=np.float32)
    except (ValueError, TypeError):
        raise BadRequest(400, "image must be a rectangular array of numbers [height][width]") from None
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[2] not in (1, channels) or 0 in pixels.shape:
        raise BadRequest(
            400, f"image has shape {list(pixels.shape)}: send [height][width] or [height][width][{channels}]"
        )
    if pixels.shape[0] * pixels.shape[1] > MAX_PIXELS:
        raise BadRequest(413, f"image is {pixels.shape[1]}x{pixels.shape[0]}; at most {MAX_PIXELS} pixels are accepted")
    if not np.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 255:
        raise BadRequest(400, "pixel values must be finite numbers in [0, 255]")
    if pixels.shape[2] != channels:  # gray -> RGB
        pixels = np.repeat(pixels, channels, axis=2)
    return pixels


def to_tensor(pixels: np.ndarray, params: Params) -> np.ndarray:
    """float32 [H, W, C] 0..255 -> FP32 [1, C, height, width] = resized / 255 * scale."""
    if pixels.shape[:2] != (params.height, params.width):
        channels = [
            np.asarray(
                Image.fromarray(np.ascontiguousarray(pixels[:, :, c]), mode="F").resize(
                    (params.width, params.height), Image.Resampling.BILINEAR
                )
            )
            for c in range(pixels.shape[2])
        ]
        pixels = np.stack(channels, axis=2)
    tensor = pixels.transpose(2, 0, 1)[None].astype(np.float32) * np.float32(params.scale / 255.0)
    return np.ascontiguousarray(tensor)


def parse_body(body: bytes, content_type: str, params: Params) -> np.ndarray:
    """A request body in any accepted form -> float32 [H, W, C] pixels."""
    if len(body) > MAX_BODY_BYTES:
        raise BadRequest(413, f"body is {len(body)} bytes; the limit is {MAX_BODY_BYTES}")
    kind = content_type.split(";")[0].strip().lower()
    if kind.startswith("image/"):
        return decode_image(body, params.channels)
    if kind in ("application/json", ""):
        if not body:
            raise BadRequest(400, 'empty body: send an image (image/png, image/jpeg) or JSON {"image": [[...]]}')
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(400, f"body is not valid JSON: {exc}") from None
        if isinstance(doc, dict) and "image" in doc:
            return array_image(doc["image"], params.channels)
        if isinstance(doc, dict) and isinstance(doc.get("image_b64"), str):
            try:
                data = base64.b64decode(doc["image_b64"], validate=True)
            except (binascii.Error, ValueError):
                raise BadRequest(400, "image_b64 is not valid base64") from None
            return decode_image(data, params.channels)
        raise BadRequest(400, 'JSON body needs "image" (a [height][width] array) or "image_b64" (base64 PNG/JPEG)')
    raise BadRequest(415, f"content type {kind!r} is not accepted: send image/png, image/jpeg or application/json")


def build_app(service: str, params: Params):
    app = create_app(service)

    @app.post("/v1/preprocess")
    async def preprocess(request: Request) -> Response:
        body = await read_body(request, MAX_BODY_BYTES)
        content_type = request.headers.get("content-type", "")
        # Decoding and resizing take milliseconds of CPU (Pillow and numpy release the GIL): off the event loop.
        tensor = await run_in_threadpool(lambda: to_tensor(parse_body(body, content_type, params), params))
        if OCTET in request.headers.get("accept", ""):
            return Response(tensor.tobytes(), headers=raw_headers(tensor.shape))
        return json_response(
            {"name": params.input_name, "datatype": "FP32", "shape": tensor.shape, "data": tensor.ravel()}
        )

    return app
