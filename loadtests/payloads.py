"""Request bodies for the load tests, built once: real handwritten digits (scikit-learn's bundled set)
as PNG for the business API and as v2 tensors (JSON and binary) for direct inference."""

from __future__ import annotations

import io
from functools import cache

import numpy as np
import orjson

from services.common.v2wire import HEADER_LENGTH, write_request

INPUT_NAME = "input"
SHAPE = (1, 1, 8, 8)


@cache
def digit_images(count: int = 64) -> np.ndarray:
    """uint8 [count, 8, 8] images; scikit-learn's digits when installed, else a fixed pseudo-random set."""
    try:
        from sklearn.datasets import load_digits

        images = load_digits().images[:count]
        return np.clip(images * 16, 0, 255).astype(np.uint8)
    except ImportError:  # the `load` extra does not need scikit-learn
        return np.random.default_rng(0).integers(0, 256, size=(count, 8, 8), dtype=np.uint8)


@cache
def png_bodies() -> tuple[bytes, ...]:
    from PIL import Image

    bodies = []
    for image in digit_images():
        buffer = io.BytesIO()
        Image.fromarray(image, mode="L").save(buffer, format="PNG")
        bodies.append(buffer.getvalue())
    return tuple(bodies)


def _tensor(image: np.ndarray) -> np.ndarray:
    return (image.astype(np.float32) / np.float32(255.0)).reshape(SHAPE)


@cache
def infer_json_bodies() -> tuple[bytes, ...]:
    return tuple(
        orjson.dumps(
            {
                "inputs": [
                    {"name": INPUT_NAME, "shape": list(SHAPE), "datatype": "FP32", "data": _tensor(i).ravel().tolist()}
                ]
            }
        )
        for i in digit_images()
    )


@cache
def infer_binary_bodies() -> tuple[tuple[bytes, int], ...]:
    """(body, JSON header length) pairs in the binary tensor extension's layout."""
    bodies = []
    for image in digit_images():
        body, headers = write_request({INPUT_NAME: _tensor(image)}, ["logits"])
        bodies.append((body, int(headers[HEADER_LENGTH])))
    return tuple(bodies)
