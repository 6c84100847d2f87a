"""Objects kept for long at a fraction of their memory. Pure.

A node can hold thousands of pods, each cached as parsed JSON (dicts, lists, strings) until it
changes. Parsed separately, every pod carries its own copy of the same keys ("metadata",
"terminationMessagePath", ...) and of the same short values ("True", "busybox", "ClusterFirst",
the creation second shared by a whole burst). Interning them makes all cached pods share one copy:
a typical pod drops from ~16 KB to ~8 KB of Python objects (measured; 5000 pods: ~40 MB less), for
~0.1-0.2 ms of CPU per watch event.
"""

from __future__ import annotations

import sys
from typing import Any

# Strings up to this length are shared; longer ones (env values, scripts, certificates) are
# rarely repeated and not worth the lookup.
SHORT = 64

_intern = sys.intern


def interned(value: Any) -> Any:
    """A copy of a JSON value whose dict keys and short strings are interned."""
    kind = type(value)
    if kind is dict:
        return {_intern(k): _one(v) for k, v in value.items()}
    if kind is list:
        return [_one(v) for v in value]
    return _one(value)


def _one(value: Any) -> Any:
    kind = type(value)
    if kind is str:
        return _intern(value) if len(value) <= SHORT else value
    if kind is dict:
        return {_intern(k): _one(v) for k, v in value.items()}
    if kind is list:
        return [_one(v) for v in value]
    return value


def compact_pod(pod: dict[str, Any]) -> dict[str, Any]:
    """The pod informer's transform: without managedFields, and interned once it has settled.

    Only a pod that runs or has finished, and is not being deleted, is interned: that version
    is the one kept for minutes or days. The versions a pod passes through on its way there (and
    out) are replaced within seconds, so they are not worth the CPU.
    """
    meta = pod.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
        settled = not meta.get("deletionTimestamp") and \
            (pod.get("status") or {}).get("phase") in ("Running", "Succeeded", "Failed")
        if settled:
            compacted: dict[str, Any] = interned(pod)
            return compacted
    return pod
