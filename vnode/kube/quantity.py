"""Kubernetes resource quantities ("500m", "128Gi", "1e3"): parsing and the kubelet's arithmetic.

Pure. Values are exact `Fraction`s, so "0.1" + "0.2" is exactly "300m" and nothing rounds until
the kubelet's own rules say so (resourceFieldRef rounds *up* to the divisor).
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000), "": Fraction(1),
            "k": Fraction(10**3), "M": Fraction(10**6), "G": Fraction(10**9), "T": Fraction(10**12),
            "P": Fraction(10**15), "E": Fraction(10**18)}
# The apiserver's grammar: sign, digits with an optional fraction, then one suffix.
_QUANTITY = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
                       r"(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$")


class QuantityError(ValueError):
    pass


def parse_quantity(text: str | float) -> Fraction:
    """Parse a quantity; raises QuantityError naming the bad text."""
    if isinstance(text, bool):
        raise QuantityError(f"{text!r} is not a quantity")
    if isinstance(text, int):
        return Fraction(text)
    if isinstance(text, float):
        return Fraction(str(text))
    match = _QUANTITY.match(text.strip())
    if not match:
        raise QuantityError(f"{text!r} is not a Kubernetes quantity (e.g. '4', '500m', '16Gi')")
    number, suffix = match.group(1), match.group(2) or ""
    value = Fraction(number)
    if suffix in _BINARY:
        return value * _BINARY[suffix]
    if suffix in _DECIMAL:
        return value * _DECIMAL[suffix]
    return value * Fraction(10) ** int(suffix[1:])


def is_non_negative_integer(text: str | int) -> bool:
    try:
        q = parse_quantity(text)
    except QuantityError:
        return False
    return q >= 0 and q.denominator == 1


def resource_field_value(resource: str, amount: Fraction, divisor: Fraction) -> str:
    """The string the kubelet puts into env/downwardAPI for a resourceFieldRef.

    CPU is computed on milli-units and rounded up ("500m" with divisor 1 is "1"); everything else
    (memory, ephemeral-storage, hugepages) on whole units, also rounded up.
    """
    if divisor <= 0:
        divisor = Fraction(1)
    if resource.endswith("cpu"):
        milli = math.ceil(amount * 1000)
        milli_div = math.ceil(divisor * 1000)
        return str(math.ceil(Fraction(milli, max(1, milli_div))))
    return str(math.ceil(Fraction(math.ceil(amount)) / Fraction(math.ceil(divisor))))
