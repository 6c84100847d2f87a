"""JSON bytes exactly as Go's ``encoding/json`` writes them, and JSON parsing as tolerant as Go's.

interLink's components are Go programs, so "byte-exact" means: compact output, Go's string escaping
(``<``, ``>``, ``&`` as ``\\u003c``/``\\u003e``/``\\u0026``, U+2028/U+2029 escaped, ``\\b``/``\\f``
short escapes, other control characters as lowercase ``\\u00XX``, everything else raw UTF-8) and Go's
float formatting. Objects are written in the order their keys are given: the models put their keys in
Go struct order, and Kubernetes objects arrive from the apiserver already in Go order.

Pure and I/O-free.
"""

from __future__ import annotations

import codecs
import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

__all__ = ["JSONDecodeError", "dumps", "loads"]

JSONDecodeError = json.JSONDecodeError

# Characters Go escapes on top of what Python's json module escapes with ensure_ascii=False.
# They can only occur inside JSON strings, so a plain replace on the whole document is safe.
_GO_EXTRA_ESCAPES = (
    ("<", "\\u003c"),
    (">", "\\u003e"),
    ("&", "\\u0026"),
    ("\u2028", "\\u2028"),
    ("\u2029", "\\u2029"),
)


def _replace_surrogates(err: UnicodeError) -> tuple[bytes, int]:
    # A lone surrogate in a Python str comes from a JSON "\udXXX" escape; Go's decoder turns
    # that into U+FFFD, so a Go peer re-encoding the same value would write U+FFFD.
    assert isinstance(err, UnicodeEncodeError)
    # (CPython's UTF-8 encoder only takes ASCII str replacements, hence the encoded bytes.)
    return "\ufffd".encode() * (err.end - err.start), err.end


codecs.register_error("vnode-gojson-fffd", _replace_surrogates)



def _default(value: Any) -> Any:
    # A datetime inside a Kubernetes dict (e.g. from a client library's model) is written the way
    # Go writes metav1.Time: UTC, whole seconds, RFC 3339. A naive datetime is taken as UTC.
    if isinstance(value, datetime):
        moment = value.replace(tzinfo=UTC) if value.tzinfo is None else value
        return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_fast_encoder = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_default
)


def dumps(value: Any) -> bytes:
    """Encode a JSON value (dict/list/tuple/str/int/float/bool/None) the way Go would."""
    if _contains_float(value):
        text = "".join(_encode_slow(value))
    else:
        text = _fast_encoder.encode(value)
    for raw, escaped in _GO_EXTRA_ESCAPES:
        if raw in text:
            text = text.replace(raw, escaped)
    return text.encode("utf-8", "vnode-gojson-fffd")


def loads(data: bytes | str) -> Any:
    """Parse JSON like Go: invalid UTF-8 becomes U+FFFD, NaN/Infinity literals are rejected."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes | bytearray) else data
    return json.loads(text, parse_constant=_reject_constant)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid JSON literal {name}")


def _contains_float(value: Any) -> bool:
    # Floats are rare on this wire (Kubernetes API conventions forbid them), so the fast C encoder
    # is used unless a float is present; Python's float repr differs from Go's ('1.0' vs '1').
    # Exact type checks first: this walk costs about half of the C encoder's time.
    stack = [value]
    pop, extend = stack.pop, stack.extend
    while stack:
        item = pop()
        kind = type(item)
        if kind is str:
            continue
        if kind is dict:
            extend(item.values())
        elif kind is list or kind is tuple:
            extend(item)
        elif kind is float or isinstance(item, float):
            return True
        elif isinstance(item, Mapping):
            extend(item.values())
        elif isinstance(item, list | tuple):
            extend(item)
    return False


def go_float(value: float) -> str:
    """Format a float as Go's encoding/json does (shortest round-trip digits, 'f' or 'e' style)."""
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"json: unsupported value: {value!r}")
    magnitude = abs(value)
    if magnitude != 0 and (magnitude < 1e-6 or magnitude >= 1e21):
        # Python's repr picks the same shortest digits and e-notation here; Go then trims a
        # leading zero from a negative two-digit exponent ("1e-07" -> "1e-7").
        text = repr(value)
        mantissa, _, exponent = text.partition("e")
        if exponent.startswith("-0"):
            exponent = "-" + exponent[2:]
        return f"{mantissa}e{exponent}"
    return format(Decimal(repr(value)).normalize(), "f")


def _encode_slow(value: Any) -> list[str]:
    parts: list[str] = []
    _emit(value, parts)
    return parts


def _emit(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(json.dumps(value, ensure_ascii=False))
    elif isinstance(value, int):
        out.append(str(int(value)))
    elif isinstance(value, float):
        out.append(go_float(value))
    elif isinstance(value, Mapping):
        out.append("{")
        first = True
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"JSON object keys must be str, not {type(key).__name__}")
            if not first:
                out.append(",")
            first = False
            out.append(json.dumps(key, ensure_ascii=False))
            out.append(":")
            _emit(item, out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _emit(item, out)
        out.append("]")
    else:
        _emit(_default(value), out)
