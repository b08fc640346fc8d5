"""The wire benchmark runs and measures what it names (speed itself is never asserted)."""

from __future__ import annotations

from loadtests.bench import wire


def test_wire_bench_measures_the_model_server_request_and_every_hop_shape(capsys) -> None:
    assert wire.main(["--number", "20", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "split + decode_request + write_response" in out
    for shape in wire.HOP_SHAPES:
        assert f"hop {list(shape)}: raw frame " in out


def test_both_hop_formats_carry_the_same_tensor() -> None:
    for shape in wire.HOP_SHAPES:
        raw, v2 = wire.hop_formats(shape)
        assert raw().tobytes() == v2().tobytes() and raw().shape == shape
