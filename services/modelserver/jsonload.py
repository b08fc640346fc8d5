"""Load an infer request's JSON: orjson for small bodies, simdjson for large tensors.

orjson turns a 1 MB tensor into 150,000 Python floats that numpy then copies again; simdjson
exports a flat numeric array straight into a buffer (`as_buffer`), about 3x faster for the whole
request. The result has the shape orjson gives, except that an input's numeric `data` may arrive
as a flat numpy array (float64, int64 or uint64), or as `Nested` (the numbers of a nested array and
its minified text) instead of a list; codec.py validates all of them alike. Anything the buffer
export cannot take (booleans, strings, nulls, mixed) falls back to a list.

Memory safety: pysimdjson 7.0.2 sizes `as_list()` (and the lists inside `as_dict()`) by simdjson's
element count, which saturates at 2^24 - 1: a longer array is written past the end of its list
(heap corruption, SIGABRT). No array that may be that long ever reaches them. An array of n
elements takes at least 2n - 1 bytes, so below SAFE_BYTES no array can be; from there on every
array is converted by a walk that checks its length first, and numeric data only ever goes
through `as_buffer`, which sizes its buffer from the document's tape and is exact at any length.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import orjson

try:  # optional: without it every body goes through orjson
    import simdjson
except ImportError:  # pragma: no cover
    simdjson = None

LARGE = 64 * 1024  # below this orjson is as fast and simpler
SATURATED = 0xFFFFFF  # simdjson's element count stops here: len() == SATURATED means "this or more"
SAFE_BYTES = 2 * SATURATED - 1  # the smallest body that can hold an array of SATURATED elements
MAX_DEPTH = 64  # as deep as numpy reads nested lists (its NPY_MAXDIMS)


class JSONError(ValueError):
    """The body is not valid JSON."""


class JSONTooLarge(ValueError):
    """An array in the body is longer than the JSON path can convert."""


@dataclass(slots=True, frozen=True)
class Nested:
    """A nested numeric `data` array: its numbers in row-major order and its minified text, whose
    brackets tell whether the nesting is regular (see `nested_shape`)."""

    flat: np.ndarray
    text: bytes


def load(body: bytes | memoryview) -> object:
    if simdjson is None or len(body) < LARGE:
        return load_small(body)
    return load_large(body)


def load_small(body: bytes | memoryview) -> object:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise JSONError(str(exc)) from None


def load_large(body: bytes | memoryview) -> object:
    """simdjson where it can; whatever it refuses (bad JSON, integers beyond 64 bits, which orjson
    reads as floats) is decided by orjson, so both paths accept and reject the same bodies."""
    try:
        doc = simdjson.Parser().parse(body)  # a fresh parser: documents pin the parser they came from
    except (ValueError, TypeError, RuntimeError):
        return load_small(body)
    try:
        return _Converter(len(body) >= SAFE_BYTES).document(doc)
    except JSONTooLarge:
        raise
    except (ValueError, TypeError, RuntimeError):  # a duplicate key, an integer past 64 bits...
        pass
    del doc  # the document's memory goes before orjson's
    return load_small(body)


def _keys(obj: simdjson.Object) -> list[str]:
    """An object's keys; a key given twice is left to orjson (the last one wins there, while a
    simdjson lookup would find the first: both paths must read the same request)."""
    keys = list(obj.keys())
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate key")
    return keys


class _Converter:
    def __init__(self, guarded: bool) -> None:
        self.guarded = guarded  # the body is long enough to hold an array simdjson cannot count

    def document(self, doc: object) -> object:
        if not isinstance(doc, simdjson.Object):
            return self.plain(doc)
        out = {}
        for key in _keys(doc):
            value = doc[key]
            if key == "inputs" and isinstance(value, simdjson.Array):
                out[key] = [self.input(item) for item in self.items(value)]
            else:
                out[key] = self.plain(value)
        return out

    def items(self, array: simdjson.Array) -> simdjson.Array:
        if self.guarded and len(array) >= SATURATED:
            raise JSONTooLarge(f"a JSON array has {SATURATED:,} or more elements")
        return array

    def plain(self, value: object) -> object:
        if not self.guarded:
            if isinstance(value, simdjson.Object):
                return value.as_dict()
            if isinstance(value, simdjson.Array):
                return value.as_list()
            return value
        # a walk that checks every array's length before anything is converted
        if isinstance(value, simdjson.Object):
            return {key: self.plain(value[key]) for key in _keys(value)}
        if isinstance(value, simdjson.Array):
            return [self.plain(item) for item in self.items(value)]
        return value

    def input(self, item: object) -> object:
        if not isinstance(item, simdjson.Object):
            return self.plain(item)
        datatype = item.get("datatype")
        out = {}
        for key in _keys(item):
            value = item[key]
            if key == "data" and isinstance(value, simdjson.Array):
                out[key] = self.numbers(value, datatype, _count(self.plain(item.get("shape"))))
            else:
                out[key] = self.plain(value)
        return out

    def numbers(self, data: simdjson.Array, datatype: object, count: int | None) -> object:
        """A flat numpy array when every element is a number of a kind numpy can take at once."""
        kind = {"FP": "f", "IN": "i", "UI": "u"}.get(datatype[:2]) if isinstance(datatype, str) else None
        for of_type in _KIND_ORDER.get(kind, ()):
            try:
                flat = np.frombuffer(data.as_buffer(of_type=of_type), dtype=_BUFFER_DTYPE[of_type])
            except (TypeError, ValueError):
                continue  # wrong element kind or out of range: try the next, then a list
            # as_buffer flattens nested arrays, ragged ones too: only a flat list is taken as is
            length = len(data)
            if (length < SATURATED and flat.size == length) or flat.size != count:
                return flat  # flat, or a count the codec refuses without looking at the nesting
            return Nested(flat, data.mini)
        return self.plain(data)


def _count(shape: object) -> int | None:
    """Elements a declared shape needs (None if it is not one: the codec refuses it)."""
    if not isinstance(shape, list) or len(shape) > MAX_DEPTH:  # no product of a million dims (bigint cost)
        return None
    if not all(type(d) is int and d >= 0 for d in shape):
        return None
    count = 1
    for dim in shape:
        count *= dim
    return count


_KIND_ORDER = {"f": ("d",), "i": ("i", "u"), "u": ("u", "i")}
_BUFFER_DTYPE = {"d": np.dtype("<f8"), "i": np.dtype("<i8"), "u": np.dtype("<u8")}
_OPEN, _CLOSE, _COMMA = ord("["), ord("]"), ord(",")


def nested_shape(text: bytes) -> tuple[int, ...] | None:
    """The shape numpy would give the minified JSON array `text` of numbers, or None if it is ragged
    (or nested deeper than MAX_DEPTH). Reads only brackets and commas: a few vectorized passes per
    level, no Python object per element."""
    chars = np.frombuffer(text, np.uint8)
    opens = chars == _OPEN
    step = opens.view(np.int8) - (chars == _CLOSE).view(np.int8)
    depth = np.cumsum(step, dtype=np.int16)  # an opening bracket carries its own level; simdjson caps depth at 1024
    deepest = int(depth.max())
    if deepest > MAX_DEPTH:
        return None
    commas = chars == _COMMA
    shape: list[int] = []
    arrays = 1
    for level in range(1, deepest + 1):
        at = depth == level
        starts = np.flatnonzero(opens & at)
        if starts.size != arrays:  # some children one level up were numbers, not arrays
            return None
        empty = chars[starts + 1] == _CLOSE
        if empty.any():
            if not empty.all() or level != deepest:
                return None
            shape.append(0)
            return tuple(shape)
        separators = np.flatnonzero(commas & at)
        per = np.bincount(np.searchsorted(starts, separators, side="right") - 1, minlength=arrays)
        if per.min() != per.max():
            return None
        shape.append(int(per[0]) + 1)
        arrays *= shape[-1]
    return tuple(shape)
