"""Vectors as the index keeps them, in pure Python: int8-quantised unit vectors (one signed
byte a dimension, as hex text: every store takes text) and sign codes held as Python ints
(bit i: component i is >= 0), compared with XOR and ``int.bit_count``.

A sign code costs one comparison a dimension (no projection to compute on the edge's CPU)
and its Hamming distance falls as the angle between two vectors does, which is all a
shortlist needs: the exact cosine of the shortlist decides.
"""

from __future__ import annotations

import math
from operator import mul


def normalise(vector: list[float]) -> list[float] | None:
    """The unit vector (None: empty, zero or not finite: it cannot be compared)."""
    if not vector:
        return None
    try:
        norm = math.sqrt(math.fsum(x * x for x in vector))
    except (TypeError, OverflowError):
        return None
    if not math.isfinite(norm) or norm == 0.0:
        return None
    return [x / norm for x in vector]


def sign_code(vector: list[float]) -> int:
    code = 0
    for i, x in enumerate(vector):
        if x >= 0.0:
            code |= 1 << i
    return code


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def quantise(vector: list[float]) -> bytes:
    """A unit vector as one signed byte a component (x * 127, rounded)."""
    return bytes((max(-127, min(127, round(x * 127))) & 0xFF) for x in vector)


def components(raw: bytes) -> list[int]:
    return list(memoryview(raw).cast("b"))


def norm(a: list[int]) -> float:
    return math.sqrt(sum(map(mul, a, a)))


def cosine_quantised(a: list[int], b: list[int], norm_a: float | None = None) -> float:
    """The cosine of two quantised vectors (0.0 when either is zero or the lengths differ).
    ``norm_a``: ``a``'s norm, when the caller compares one query with many vectors."""
    if len(a) != len(b) or not a:
        return 0.0
    na = norm(a) if norm_a is None else norm_a
    nb = norm(b)
    return sum(map(mul, a, b)) / (na * nb) if na and nb else 0.0
