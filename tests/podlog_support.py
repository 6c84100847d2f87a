"""Checks on JSON log lines (plugin_client.logformat) for the observability tests: every line about
a pod must carry its identity, also the lines a test does not look for by name."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any


def lines_missing_pod_fields(lines: Sequence[dict[str, Any]], namespace: str, name: str, uid: str,
                             job_id: str) -> list[dict[str, Any]]:
    """The JSON lines whose message names the pod (its uid, or its name as a whole word: a pod
    ``web`` is not named by ``web-2``) but that do not carry its pod_namespace/pod_name/pod_uid, or,
    from the first line carrying ``job_id`` on (the job is submitted), not its job_id either."""
    named = re.compile(rf"(?<![\w-]){re.escape(name)}(?![\w-])|{re.escape(uid)}")
    wanted = {"pod_namespace": namespace, "pod_name": name, "pod_uid": uid}
    missing = []
    submitted = False
    for line in lines:
        submitted = submitted or line.get("job_id") == job_id
        expected = {**wanted, "job_id": job_id} if submitted else wanted
        if named.search(line["message"]) and any(line.get(key) != value for key, value in expected.items()):
            missing.append(line)
    return missing
