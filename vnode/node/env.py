"""Container environment resolution, as the kubelet does it. Pure: the ConfigMaps and Secrets a pod
references are fetched beforehand (see `references`), and resolution only reads them.

Rules followed (kubelet `makeEnvironmentVariables` and `third_party/forked/golang/expansion`):
* `envFrom` sources first, in order, each key optionally prefixed; then `env` entries in order,
  later definitions replacing earlier ones;
* `value` is `$(VAR)`-expanded against the variables defined so far; `$$` is a literal `$`;
  unknown references stay as written; values from `valueFrom` are never expanded;
* a missing ConfigMap/Secret (or key) is an error unless the reference is `optional`;
* `fieldRef`/`resourceFieldRef` use the downward API values (a resource without a limit falls back
  to the node's allocatable, as in the kubelet).
Container `command` and `args` are expanded with the resulting environment, also like the kubelet,
so the plugin receives exactly what a container on a real node would run.
"""

from __future__ import annotations

import base64
import binascii
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction

from vnode.kube.quantity import QuantityError, parse_quantity, resource_field_value
from vnode.kube.types import ConfigMap, Container, EnvVar, Pod, Secret


class MissingReference(Exception):
    """A ConfigMap/Secret (or one of its keys) the pod needs does not exist yet.

    The pod waits (ContainerCreating) and is retried; this is not a permanent failure.
    """

    def __init__(self, kind: str, name: str, key: str = "", *, context: str = "") -> None:
        what = f'{kind.lower()} "{name}" not found' if not key else \
            f'couldn\'t find key {key} in {kind} "{name}"'
        super().__init__(f"{context}: {what}" if context else what)
        self.context = context
        self.kind = kind
        self.name = name
        self.key = key


class InvalidPodSpec(Exception):
    """The pod asks for something that can never be resolved (e.g. an unknown fieldPath).
    Permanent: the pod is failed with the message."""


@dataclass
class References:
    """The objects a pod references, fetched from the apiserver; None marks a 404."""

    configmaps: dict[str, ConfigMap | None] = field(default_factory=dict)
    secrets: dict[str, Secret | None] = field(default_factory=dict)

    def configmap(self, name: str) -> ConfigMap | None:
        return self.configmaps.get(name)

    def secret(self, name: str) -> Secret | None:
        return self.secrets.get(name)


@dataclass(frozen=True)
class DownwardValues:
    """Values the downward API reports that are not in the pod object yet."""

    host_ip: str
    pod_ip: str
    # The node's allocatable, used for resourceFieldRef on limits that are not set.
    node_allocatable: Mapping[str, str] = field(default_factory=dict)


# -- $(VAR) expansion ---------------------------------------------------------------------------


def expand(text: str, lookup: Callable[[str], str | None]) -> str:
    """Kubernetes `$(VAR)` expansion: `$(NAME)` → value (or left as written when unknown),
    `$$` → `$`, any other `$` kept literally."""
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    n = len(text)
    while cursor < n:
        if text[cursor] == "$" and cursor + 1 < n:
            out.append(text[checkpoint:cursor])
            nxt = text[cursor + 1]
            if nxt == "$":
                out.append("$")
                advance = 1
            elif nxt == "(":
                close = text.find(")", cursor + 2)
                if close < 0:
                    out.append("$(")
                    advance = 1
                else:
                    name = text[cursor + 2:close]
                    value = lookup(name)
                    out.append(value if value is not None else f"$({name})")
                    advance = close - cursor
            else:
                out.append("$" + nxt)
                advance = 1
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    out.append(text[checkpoint:])
    return "".join(out)


# -- downward API -------------------------------------------------------------------------------


def go_quote(text: str) -> str:
    """Go's strconv.Quote (fmt %q), which the kubelet uses for labels/annotations files."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif ch == " " or (code >= 0x20 and _is_print(ch)):
            out.append(ch)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
               "\v": "\\v"}


def _is_print(ch: str) -> bool:
    # Go's unicode.IsPrint: letters, marks, numbers, punctuation, symbols and U+0020.
    return unicodedata.category(ch)[0] in "LMNPS"


def format_map(values: Mapping[str, str]) -> str:
    """The kubelet's `key="value"` lines (sorted) for metadata.labels/annotations files."""
    return "\n".join(f"{k}={go_quote(values[k])}" for k in sorted(values))


def _subscript(path: str) -> tuple[str, str | None]:
    """`metadata.labels['app']` → ("metadata.labels", "app")."""
    if path.endswith("']") and "['" in path:
        base, _, rest = path.partition("['")
        return base, rest[:-2]
    return path, None


def field_ref_value(pod: Pod, path: str, down: DownwardValues, *, volume: bool = False) -> str:
    """The value of a `fieldRef.fieldPath`. Whole label/annotation maps only in volumes."""
    meta = pod.get("metadata", {})
    spec = pod.get("spec", {})
    base, key = _subscript(path)
    if base in ("metadata.labels", "metadata.annotations"):
        values: dict[str, str] = dict(
            (meta.get("labels") if base == "metadata.labels" else meta.get("annotations")) or {})
        if key is not None:
            return values.get(key, "")
        if volume:
            return format_map(values)
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.hostIP": down.host_ip,
        "status.hostIPs": down.host_ip,
        "status.podIP": down.pod_ip,
        "status.podIPs": down.pod_ip,
    }
    if key is None and base in simple:
        return simple[base]
    raise InvalidPodSpec(f"unsupported fieldRef fieldPath {path!r}")


def resource_ref_value(pod: Pod, container_name: str, resource: str, divisor: str,
                       down: DownwardValues) -> str:
    """The value of a `resourceFieldRef` (e.g. `limits.cpu` with divisor `1m`)."""
    containers = list(pod.get("spec", {}).get("containers", [])) + \
        list(pod.get("spec", {}).get("initContainers", []))
    target = next((c for c in containers if c.get("name") == container_name), None)
    if target is None:
        raise InvalidPodSpec(f"resourceFieldRef: container {container_name!r} not found")
    scope, _, name = resource.partition(".")
    if scope not in ("limits", "requests") or not name:
        raise InvalidPodSpec(f"unsupported resourceFieldRef resource {resource!r}")
    resources = target.get("resources", {})
    per_scope: dict[str, str] = dict(
        (resources.get("limits") if scope == "limits" else resources.get("requests")) or {})
    amount_text = per_scope.get(name)
    if amount_text is None and scope == "limits":
        amount_text = down.node_allocatable.get(name)
    try:
        amount = parse_quantity(amount_text) if amount_text is not None else Fraction(0)
        div = parse_quantity(divisor) if divisor else Fraction(1)
    except QuantityError as err:
        raise InvalidPodSpec(f"resourceFieldRef {resource!r}: {err}") from None
    return resource_field_value(name, amount, div)


# -- ConfigMap / Secret values -------------------------------------------------------------------


def secret_text(encoded: str) -> str:
    """A Secret value (base64 on the wire) as text; bytes that are not UTF-8 become U+FFFD, as
    Go's JSON encoding of string(bytes) does."""
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raw = encoded.encode()
    return raw.decode("utf-8", errors="replace")


def _configmap_values(cm: ConfigMap) -> dict[str, str]:
    return dict(cm.get("data") or {})


def _secret_values(secret: Secret) -> dict[str, str]:
    return {k: secret_text(v) for k, v in (secret.get("data") or {}).items()}


def valid_env_name(name: str) -> bool:
    """Kubernetes 1.34+ (RelaxedEnvironmentVariableValidation): printable ASCII except '='."""
    return bool(name) and all(0x20 <= ord(c) < 0x7F for c in name) and "=" not in name


@dataclass
class ResolvedEnv:
    env: list[EnvVar]
    # envFrom keys dropped because they are not valid variable names (the kubelet emits an event).
    invalid_keys: list[str] = field(default_factory=list)


def resolve_env(pod: Pod, container: Container, refs: References, down: DownwardValues, *,
                extra: Mapping[str, str] | None = None) -> ResolvedEnv:
    """The container's final environment as a list of plain `{name, value}` entries.

    `extra` (e.g. KUBERNETES_SERVICE_HOST for remote pods) is added last, after the pod's own
    variables, so a pod can use it in `$(...)` but never loses its own values to it.
    """
    values: dict[str, str] = {}
    invalid: list[str] = []
    cname = container.get("name", "")
    where = f"container {cname}"
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            ref = source["configMapRef"]
            name, optional = ref.get("name", ""), bool(ref.get("optional"))
            cm = refs.configmap(name)
            if cm is None:
                if optional:
                    continue
                raise MissingReference("ConfigMap", name, context=where)
            pairs = _configmap_values(cm)
        elif "secretRef" in source:
            ref = source["secretRef"]
            name, optional = ref.get("name", ""), bool(ref.get("optional"))
            secret = refs.secret(name)
            if secret is None:
                if optional:
                    continue
                raise MissingReference("Secret", name, context=where)
            pairs = _secret_values(secret)
        else:
            continue
        for key in sorted(pairs):
            full = prefix + key
            if not valid_env_name(full):
                invalid.append(full)
                continue
            values[full] = pairs[key]

    for var in container.get("env") or []:
        name = var.get("name", "")
        if "valueFrom" not in var:
            values[name] = expand(var.get("value", ""), values.get)
            continue
        resolved = _value_from(pod, cname, var, refs, down)
        if resolved is not None:
            values[name] = resolved

    for name, value in (extra or {}).items():
        values.setdefault(name, value)
    return ResolvedEnv([{"name": k, "value": v} for k, v in values.items()], invalid)


def _value_from(pod: Pod, cname: str, var: EnvVar, refs: References,
                down: DownwardValues) -> str | None:
    source = var.get("valueFrom", {})
    where = f"container {cname} env {var.get('name', '')}"
    if "fieldRef" in source:
        try:
            return field_ref_value(pod, source["fieldRef"].get("fieldPath", ""), down)
        except InvalidPodSpec as err:
            raise InvalidPodSpec(f"{where}: {err}") from None
    if "resourceFieldRef" in source:
        rref = source["resourceFieldRef"]
        try:
            return resource_ref_value(pod, rref.get("containerName") or cname,
                                      rref.get("resource", ""), rref.get("divisor", ""), down)
        except InvalidPodSpec as err:
            raise InvalidPodSpec(f"{where}: {err}") from None
    if "configMapKeyRef" in source:
        ref = source["configMapKeyRef"]
        name, key, optional = ref.get("name", ""), ref.get("key", ""), bool(ref.get("optional"))
        cm = refs.configmap(name)
        if cm is None:
            if optional:
                return None
            raise MissingReference("ConfigMap", name, context=where)
        data = _configmap_values(cm)
        if key not in data:
            if optional:
                return None
            raise MissingReference("ConfigMap", name, key, context=where)
        return data[key]
    if "secretKeyRef" in source:
        ref = source["secretKeyRef"]
        name, key, optional = ref.get("name", ""), ref.get("key", ""), bool(ref.get("optional"))
        secret = refs.secret(name)
        if secret is None:
            if optional:
                return None
            raise MissingReference("Secret", name, context=where)
        encoded = (secret.get("data") or {}).get(key)
        if encoded is None:
            if optional:
                return None
            raise MissingReference("Secret", name, key, context=where)
        return secret_text(encoded)
    raise InvalidPodSpec(f"{where}: unsupported valueFrom {sorted(source)}")


def expand_command(container: Container, env: list[EnvVar]) -> Container:
    """A copy of `container` with `$(VAR)` in command/args expanded from its resolved env."""
    values = {e.get("name", ""): e.get("value", "") for e in env}
    out: Container = dict(container)  # type: ignore[assignment]
    for key in ("command", "args"):
        if key in container:
            out[key] = [expand(str(arg), values.get) for arg in container[key]]
    return out


def env_references(container: Container) -> tuple[set[str], set[str]]:
    """Names of the ConfigMaps and Secrets a container's env/envFrom refer to."""
    configmaps: set[str] = set()
    secrets: set[str] = set()
    for source in container.get("envFrom") or []:
        if "configMapRef" in source:
            configmaps.add(source["configMapRef"].get("name", ""))
        if "secretRef" in source:
            secrets.add(source["secretRef"].get("name", ""))
    for var in container.get("env") or []:
        src = var.get("valueFrom", {})
        if "configMapKeyRef" in src:
            configmaps.add(src["configMapKeyRef"].get("name", ""))
        if "secretKeyRef" in src:
            secrets.add(src["secretKeyRef"].get("name", ""))
    return configmaps, secrets
