"""One error base and one error body: every service's refusal is an HTTPError rendered by error_body."""

from __future__ import annotations

import pickle

import orjson
import pytest

from services.common.client import NoHealthyUpstream, QueryOfDeath, UpstreamError, UpstreamTimeout
from services.common.errors import HTTPError, ProtocolError, error_body
from services.common.routing import RouteError
from services.pipeline.business import StageFailed
from services.pipeline.service import BadRequest


@pytest.mark.parametrize(
    ("error", "status", "message"),
    [
        (ProtocolError(400, "bad tensor", ((b"retry-after", b"1"),)), 400, "bad tensor"),
        (BadRequest(413, "body too large"), 413, "body too large"),
        (StageFailed(502, "stage gave no predictions", stage="digits-postprocess"), 502, "stage gave no predictions"),
        (RouteError(404, "model 'digits' has no version v9"), 404, "model 'digits' has no version v9"),
        (UpstreamError("digits-v1", "down"), 503, "digits-v1: down"),
        (NoHealthyUpstream("digits-v1", "every host ejected"), 503, "digits-v1: every host ejected"),
        (QueryOfDeath("digits-v1", "reset 3 hosts"), 502, "digits-v1: reset 3 hosts"),
        (UpstreamTimeout("digits-v1", "10s"), 504, "digits-v1: 10s"),
    ],
)
def test_every_service_error_is_an_http_error(error: HTTPError, status: int, message: str) -> None:
    assert isinstance(error, HTTPError)
    assert (error.status, error.message, str(error)) == (status, message, message)


def test_protocol_error_crosses_the_decoder_process_intact() -> None:
    error = pickle.loads(pickle.dumps(ProtocolError(429, "queue full", ((b"retry-after", b"1"),))))
    assert (error.status, error.message, error.headers) == (429, "queue full", ((b"retry-after", b"1"),))


def test_error_body() -> None:
    assert orjson.loads(error_body('a "quoted" name')) == {"error": 'a "quoted" name'}
    assert orjson.loads(error_body("no key", "message")) == {"message": "no key"}  # Kong's routes
    assert orjson.loads(error_body("down", stage="digits-v1")) == {"error": "down", "stage": "digits-v1"}
