"""The query-of-death memory: refuse a request that reset two hosts, forget one that was answered."""

from __future__ import annotations

from services.common.quarantine import ResetMemory, fingerprint


def test_refused_once_two_different_hosts_were_reset() -> None:
    memory = ResetMemory(ttl=60)
    key = fingerprint("POST", "/v2/models/m/infer", b"poison")
    assert not memory.active
    assert memory.reset(key, ("h", 1), 0.0) == 1
    assert memory.reset(key, ("h", 1), 1.0) == 1  # the same host twice is still one host
    assert not memory.refused(key, 1.0)
    assert memory.reset(key, ("h", 2), 2.0) == 2
    assert memory.refused(key, 3.0)
    assert not memory.refused(fingerprint("POST", "/v2/models/m/infer", b"other"), 3.0)


def test_an_answer_clears_the_fingerprint_and_the_ttl_expires_it() -> None:
    memory = ResetMemory(ttl=10)
    key = fingerprint("POST", "/x", b"body")
    memory.reset(key, "a", 0.0)
    memory.answered(key)  # an innocent request caught on a killed replica, answered by another
    assert not memory.active
    memory.reset(key, "a", 0.0)
    memory.reset(key, "b", 1.0)
    assert memory.refused(key, 11.0) and not memory.refused(key, 11.5)
    assert not memory.active  # expired entries go


def test_memory_is_bounded() -> None:
    memory = ResetMemory(capacity=4)
    for i in range(100):
        memory.reset(fingerprint("POST", "/x", str(i).encode()), "a", float(i))
    assert len(memory._seen) == 4
