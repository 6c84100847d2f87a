"""Go-JSON bytes of pods, remembered per pod version, for the /status body.

An agent sends every running pod in every status cycle, and most of them have not changed since
the last cycle. Encoding 1000 full pods Go-exactly costs tens of milliseconds of event-loop time per
call (measured: the largest item in a 1000-pod burst profile, bench/findings.md). A Kubernetes
object's content is fixed by its (uid, resourceVersion), so the bytes of an unchanged pod are
reused; a changed pod has a new resourceVersion and is encoded again.

Pods without a uid or resourceVersion (hand-built ones in tests) are always encoded fresh.
Pure and I/O-free.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from .models import encode

# ~3 KiB per typical pod: 32 MiB holds about 10000 pods (interLink's default node capacity) and
# bounds the memory whatever the pods look like.
DEFAULT_MAX_BYTES = 32 * 1024 * 1024


def _version(pod: Mapping[str, Any]) -> tuple[str, str] | None:
    meta = pod.get("metadata")
    if not isinstance(meta, Mapping):
        return None
    uid, rv = meta.get("uid"), meta.get("resourceVersion")
    if isinstance(uid, str) and uid and isinstance(rv, str) and rv:
        return uid, rv
    return None


class EncodedPods:
    """An LRU of `uid -> (resourceVersion, bytes)`, bounded by total bytes."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[str, bytes]] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def pod(self, pod: Mapping[str, Any]) -> bytes:
        version = _version(pod)
        if version is None:
            self.misses += 1
            return encode(pod)
        uid, rv = version
        entry = self._entries.get(uid)
        if entry is not None and entry[0] == rv:
            self._entries.move_to_end(uid)
            self.hits += 1
            return entry[1]
        self.misses += 1
        data = encode(pod)
        if entry is not None:
            self._bytes -= len(entry[1])
        self._entries[uid] = (rv, data)
        self._entries.move_to_end(uid)
        self._bytes += len(data)
        while self._bytes > self.max_bytes and self._entries:
            _, (_, dropped) = self._entries.popitem(last=False)
            self._bytes -= len(dropped)
        return data

    def pod_list(self, pods: Sequence[Mapping[str, Any]]) -> bytes:
        """Byte-identical to ``encode(list(pods))``: Go writes a compact array."""
        return b"[" + b",".join(self.pod(p) for p in pods) + b"]"
