"""The container runtime's argv for one container (singularity/apptainer or enroot). Pure.

Every element is a literal argv word: the script builder quotes each one, so nothing from the pod
is ever re-parsed by a shell. The annotations `singularity-mounts`, `singularity-options`,
`enroot-mounts` and `enroot-options` are split into words with shell rules once, here (the Go
plugin pasted them raw into the script, so `$VAR` expanded there; here it stays literal).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field

from .config import SlurmConfig
from .podspec import Container, Pod, PodSpecError
from .volumes import Bind

IMAGE_ROOT = "slurm-job.vk.io/image-root"
SINGULARITY_MOUNTS = "slurm-job.vk.io/singularity-mounts"
SINGULARITY_OPTIONS = "slurm-job.vk.io/singularity-options"
ENROOT_MOUNTS = "slurm-job.vk.io/enroot-mounts"
ENROOT_OPTIONS = "slurm-job.vk.io/enroot-options"
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+\-.]*://")


def resolve_image(image: str, annotations: dict[str, str] | object, image_prefix: str) -> str:
    """Absolute paths and URIs (docker://, oras://, library://, ...) are used as they are;
    otherwise the `image-root` annotation, else ImagePrefix, is put in front (once)."""
    prefix = image_prefix
    if isinstance(annotations, dict) and IMAGE_ROOT in annotations:
        prefix = annotations[IMAGE_ROOT]
    if not prefix or image.startswith(("/", prefix)) or _SCHEME.match(image):
        return image
    return prefix + image


def annotation_words(pod: Pod, key: str) -> list[str]:
    text = pod.annotations.get(key, "")
    try:
        words = shlex.split(text)
    except ValueError as e:
        raise PodSpecError(f"metadata.annotations[{key}]", f"cannot split {text!r} into words: {e}") from None
    for w in words:
        if any(ord(c) < 0x20 for c in w):
            raise PodSpecError(f"metadata.annotations[{key}]", f"{w!r} holds a control character")
    return words


def env_file_name(container: Container) -> str:
    """The Go plugin's per-container env file (relative to the pod directory)."""
    return f"{container.name}_envfile.properties"


@dataclass(frozen=True)
class Launch:
    """How the job starts one container: optional setup commands, the command, cleanup."""

    argv: list[str]
    setup: list[list[str]] = field(default_factory=list)
    cleanup: list[list[str]] = field(default_factory=list)


def _bind_args(flag: str, pod_dir: str, binds: Sequence[Bind]) -> list[str]:
    out: list[str] = []
    for b in binds:
        src = f"{pod_dir}/{b.source}" if b.in_pod_dir else b.source
        out += [flag, f"{src}:{b.target}" + (":ro" if b.read_only else "")]
    return out


def singularity_argv(config: SlurmConfig, pod: Pod, container: Container, pod_dir: str,
                     binds: Sequence[Bind], command: Sequence[str] | None = None) -> list[str]:
    """`singularity exec|run ...`; `command` overrides the container's own (for kubectl exec)."""
    if command is not None:
        verb, tail = "exec", list(command)
    elif container.command:
        verb, tail = "exec", [*container.command, *(container.args or ())]
    else:
        verb, tail = "run", list(container.args or ())  # the image's runscript, with args
    argv = [config.singularity_path, verb, *config.singularity_default_options,
            *annotation_words(pod, SINGULARITY_MOUNTS), *annotation_words(pod, SINGULARITY_OPTIONS)]
    if container.env:
        argv += ["--env-file", f"{pod_dir}/{env_file_name(container)}"]
    if container.working_dir:
        argv += ["--pwd", container.working_dir]
    argv += _bind_args("--bind", pod_dir, binds)
    argv.append(resolve_image(container.image, dict(pod.annotations), config.image_prefix))
    return argv + tail


def enroot_name(pod: Pod, container: Container) -> str:
    return f"vnode-{pod.uid}-{container.name}"


def enroot_launch(config: SlurmConfig, pod: Pod, container: Container, pod_dir: str,
                  binds: Sequence[Bind]) -> Launch:
    """import → create → start, like the Go plugin, but with the image and container in the pod
    directory and removed at the end (the Go plugin leaves a .sqsh per run in the job's cwd)."""
    name = enroot_name(pod, container)
    sqsh = f"{pod_dir}/{container.name}.sqsh"
    image = resolve_image(container.image, dict(pod.annotations), config.image_prefix)
    setup = [[config.enroot_path, "import", "--output", sqsh, image],
             [config.enroot_path, "create", "--force", "--name", name, sqsh]]
    argv = [config.enroot_path, "start", *config.enroot_default_options,
            *annotation_words(pod, ENROOT_MOUNTS), *annotation_words(pod, ENROOT_OPTIONS)]
    for e in container.env:
        argv += ["--env", f"{e.name}={e.value}"]
    argv += _bind_args("--mount", pod_dir, binds)
    argv.append(name)
    if container.command:
        tail = [*container.command, *(container.args or ())]
        if container.working_dir:  # enroot has no --pwd
            tail = ["/bin/sh", "-c", 'cd -- "$0" && exec "$@"', container.working_dir, *tail]
        argv += tail
    else:
        argv += list(container.args or ())
    cleanup = [[config.enroot_path, "remove", "--force", name], ["rm", "-f", "--", sqsh]]
    return Launch(argv, setup, cleanup)


def container_launch(config: SlurmConfig, pod: Pod, container: Container, pod_dir: str,
                     binds: Sequence[Bind]) -> Launch:
    if config.container_runtime == "enroot":
        return enroot_launch(config, pod, container, pod_dir, binds)
    return Launch(singularity_argv(config, pod, container, pod_dir, binds))
