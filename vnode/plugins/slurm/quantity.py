"""Kubernetes resource quantities ("500m", "1.5", "4Gi", "129e6") as exact fractions.

The plugin must install without the Kubernetes side of vnode, so it carries this small parser of
its own instead of importing `vnode.kube`. Pure.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000), "": Fraction(1),
            "k": Fraction(10**3), "M": Fraction(10**6), "G": Fraction(10**9), "T": Fraction(10**12),
            "P": Fraction(10**15), "E": Fraction(10**18)}
_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?)$")

MIB = 2**20


class QuantityError(ValueError):
    """A string that is not a Kubernetes quantity."""


def parse_quantity(text: str | float) -> Fraction:
    """The exact value of a quantity. Raises QuantityError naming the bad text."""
    if isinstance(text, bool):
        raise QuantityError(f"{text!r} is not a quantity")
    if isinstance(text, int):
        return Fraction(text)
    if isinstance(text, float):
        return Fraction(str(text))
    m = _QUANTITY.match(text.strip())
    if not m:
        raise QuantityError(f"{text!r} is not a quantity (e.g. 500m, 2, 1.5, 4Gi, 129e6)")
    number, exponent, suffix = m.group(1), m.group(2), m.group(3) or ""
    value = Fraction(number)
    if exponent:
        value *= Fraction(10) ** int(exponent[1:])
    elif suffix in _BINARY:
        value *= _BINARY[suffix]
    else:
        value *= _DECIMAL[suffix]
    if value < 0:
        raise QuantityError(f"{text!r} is negative")
    return value


def cpu_millis(text: str | float) -> int:
    """CPU in millicores, rounded up (the kubelet rounds sub-milli requests up too)."""
    return math.ceil(parse_quantity(text) * 1000)


def memory_bytes(text: str | float) -> int:
    """Memory in bytes, rounded up."""
    return math.ceil(parse_quantity(text))


def parse_slurm_memory(text: str) -> int:
    """A SLURM-style size ("16G", "32000M", "1024" = MiB, "2T") or a Kubernetes one ("16Gi") → bytes.

    Flavor MemoryDefault values are written either way in the wild; SLURM's units are binary.
    """
    t = text.strip()
    m = re.fullmatch(r"(\d+)([KkMmGgTt]?)[Bb]?", t)
    if m:
        unit = {"": MIB, "k": 2**10, "m": MIB, "g": 2**30, "t": 2**40}[m.group(2).lower()]
        return int(m.group(1)) * unit
    return memory_bytes(t)
