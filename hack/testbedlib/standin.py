"""TEST SCAFFOLDING: the logic of the `singularity`/`apptainer` stand-in (hack/bin/singularity).

Apptainer/Singularity cannot be installed on the testbed machine, so SLURM jobs run their containers
through this stand-in instead: bubblewrap over a read-only view of the host's own root filesystem
(/usr, /etc, /opt, /var and the merged-/usr symlinks; no /root, /home, /work), so every image name
(docker://busybox:*, alpine:*, python:3.11-alpine, bash images, ...) gets sh, bash, coreutils,
busybox and python3. A directory given as the image is used as the root filesystem (a "sandbox").
It is never part of vnode itself.

Everything here is pure (argv → plan); hack/bin/singularity does the I/O and execs bwrap.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass, field

USAGE_EXIT = 255  # what apptainer returns when it cannot start a container
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # apptainer's default PATH
VERSION = "apptainer version 1.3.0-vnode-testbed-standin"
# Host top-level directories that make up the "image"; everything else of the host stays invisible.
IMAGE_DIRS = ("usr", "etc", "opt", "var", "srv", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def default_runscript(image: str) -> list[str]:
    """What `run` does without arguments: the image's CMD, as its Docker Hub image would have it."""
    name = image.rsplit("/", 1)[-1].split("@", 1)[0].split(":", 1)[0]
    return ["python3"] if name in ("python", "pypy") else ["/bin/sh"]


class UsageError(Exception):
    """Bad command line or env file; the stand-in prints it and exits USAGE_EXIT."""


@dataclass(frozen=True)
class Bind:
    src: str
    dst: str
    readonly: bool


@dataclass
class Invocation:
    command: str  # exec | run | shell | version
    image: str = ""
    args: list[str] = field(default_factory=list)
    binds: list[Bind] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    env_files: list[str] = field(default_factory=list)
    pwd: str | None = None
    home: str | None = None
    hostname: str | None = None
    contain: bool = False
    cleanenv: bool = False
    pid_ns: bool = False
    ipc_ns: bool = False
    no_home: bool = False
    no_mount: set[str] = field(default_factory=set)
    writable_tmpfs: bool = False
    ignored: list[str] = field(default_factory=list)  # accepted flags with no effect here (--nv, ...)


# Flags taking a value, by every spelling, mapped to a canonical name.
VALUE_FLAGS = {
    "--bind": "bind",
    "-B": "bind",
    "--mount": "mount",
    "--env": "env",
    "--env-file": "env-file",
    "--pwd": "pwd",
    "--home": "home",
    "-H": "home",
    "--hostname": "hostname",
    "--no-mount": "no-mount",
    "--workdir": "workdir",
    "-W": "workdir",
    "--network": "network",
    "--network-args": "network-args",
    "--security": "security",
    "--uid": "uid",  # accepted and ignored: the stand-in runs as whoever SLURM runs the job as
}
# Boolean flags: canonical name. Unknown flags are rejected so a typo in a job script is visible.
BOOL_FLAGS = {
    "--containall": "containall",
    "-C": "containall",
    "--contain": "contain",
    "-c": "contain",
    "--cleanenv": "cleanenv",
    "-e": "cleanenv",
    "--no-home": "no-home",
    "--no-eval": "no-eval",
    "--nv": "nv",
    "--nvccli": "nvccli",
    "--rocm": "rocm",
    "--writable-tmpfs": "writable-tmpfs",
    "--fakeroot": "fakeroot",
    "-f": "fakeroot",
    "--pid": "pid",
    "-p": "pid",
    "--ipc": "ipc",
    "-i": "ipc",
    "--userns": "userns",
    "-u": "userns",
    "--no-init": "no-init",
    "--no-privs": "no-privs",
    "--no-umask": "no-umask",
    "--compat": "compat",
    "--unsquash": "unsquash",
    "--no-https": "no-https",
}
GLOBAL_FLAGS = {"-d", "--debug", "-q", "--quiet", "-s", "--silent", "-v", "--verbose", "--nocolor"}
# Accepted without an effect, each for a reason: no GPUs here, we already run as root, no init needed.
NO_EFFECT = {
    "nv",
    "nvccli",
    "rocm",
    "fakeroot",
    "userns",
    "no-init",
    "no-privs",
    "no-umask",
    "no-eval",
    "unsquash",
    "no-https",
    "uid",
    "network",
    "network-args",
    "workdir",
}


def parse_bind_list(spec: str) -> list[Bind]:
    """`src[:dst[:ro|rw]]`, comma-separated, as `--bind`/`-B` take it."""
    binds = []
    for item in spec.split(","):
        if not item:
            continue
        parts = item.split(":")
        if len(parts) > 3:
            raise UsageError(f"--bind {item!r}: expected src[:dst[:options]]")
        src = parts[0]
        dst = parts[1] if len(parts) > 1 and parts[1] else src
        opts = parts[2].split(",") if len(parts) > 2 else []
        for o in opts:
            if o not in ("ro", "rw"):
                raise UsageError(f"--bind {item!r}: unsupported option {o!r} (the stand-in knows ro and rw)")
        if not src.startswith("/") or not dst.startswith("/"):
            raise UsageError(f"--bind {item!r}: source and destination must be absolute paths")
        binds.append(Bind(src, dst, readonly="ro" in opts))
    return binds


def parse_mount(spec: str) -> Bind:
    """`--mount type=bind,src=...,dst=...[,ro]` (the docker-style spelling apptainer also accepts)."""
    fields: dict[str, str] = {}
    flags: set[str] = set()
    for part in spec.split(","):
        k, sep, v = part.partition("=")
        if sep:
            fields[k] = v
        else:
            flags.add(k)
    if fields.get("type", "bind") != "bind":
        raise UsageError(f"--mount {spec!r}: only type=bind is supported")
    src = fields.get("source") or fields.get("src")
    dst = fields.get("destination") or fields.get("dst") or fields.get("target")
    if not src or not dst:
        raise UsageError(f"--mount {spec!r}: needs src= and dst=")
    return Bind(src, dst, readonly="ro" in flags or "readonly" in flags)


def parse_env_option(value: str) -> dict[str, str]:
    """`--env` as apptainer's flag library reads it.

    With exactly one '=' the whole text is one NAME=VALUE (commas kept; surrounding double quotes
    trimmed). With more, it is read as a CSV list of NAME=VALUE pairs. Hostile values belong in an
    --env-file instead.
    """
    if value.count("=") == 0:
        raise UsageError(f"--env {value!r}: expected NAME=VALUE")
    if value.count("=") == 1:
        items = [value.strip('"')]
    else:
        import csv

        try:
            items = next(csv.reader([value]))
        except (csv.Error, StopIteration) as e:
            raise UsageError(f"--env {value!r}: {e}") from None
    out = {}
    for item in items:
        name, sep, val = item.partition("=")
        if not sep or not NAME_RE.fullmatch(name):
            raise UsageError(f"--env {item!r}: expected NAME=VALUE with a valid variable name")
        out[name] = val
    return out


def parse_argv(argv: list[str]) -> Invocation:
    i = 0
    while i < len(argv) and argv[i] in GLOBAL_FLAGS:
        i += 1
    if i < len(argv) and argv[i] in ("--version", "version"):
        return Invocation("version")
    if i >= len(argv):
        raise UsageError("usage: singularity exec|run|shell [options] IMAGE [COMMAND ARGS...]")
    command = argv[i]
    if command not in ("exec", "run", "shell"):
        raise UsageError(f"unknown command {command!r}: the stand-in implements exec, run, shell and version")
    inv = Invocation(command)
    i += 1
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-") or arg == "-":
            break
        if arg == "--":
            i += 1
            break
        name, eq, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if not arg.startswith("--") and len(arg) > 2 and arg[:2] in VALUE_FLAGS:  # -B/src:/dst
            name, eq, inline = arg[:2], "=", arg[2:]
        if name in VALUE_FLAGS:
            if eq:
                value = inline
            else:
                i += 1
                if i >= len(argv):
                    raise UsageError(f"flag {name} needs a value")
                value = argv[i]
            _apply_value(inv, VALUE_FLAGS[name], value)
        elif name in BOOL_FLAGS and not eq:
            _apply_bool(inv, BOOL_FLAGS[name])
        else:
            raise UsageError(f"unknown flag {arg!r} for `{command}` (not supported by the testbed stand-in)")
        i += 1
    if i >= len(argv):
        raise UsageError(f"`{command}` needs an IMAGE")
    inv.image = argv[i]
    inv.args = argv[i + 1 :]
    if command == "exec" and not inv.args:
        raise UsageError("`exec` needs a COMMAND after the image")
    return inv


def _apply_value(inv: Invocation, name: str, value: str) -> None:
    if name == "bind":
        inv.binds.extend(parse_bind_list(value))
    elif name == "mount":
        inv.binds.append(parse_mount(value))
    elif name == "env":
        inv.env.update(parse_env_option(value))
    elif name == "env-file":
        inv.env_files.append(value)
    elif name == "pwd":
        inv.pwd = value
    elif name == "home":
        inv.home = value
    elif name == "hostname":
        inv.hostname = value
    elif name == "no-mount":
        inv.no_mount.update(v.strip() for v in value.split(",") if v.strip())
    elif name == "security":
        raise UsageError("--security is not supported by the testbed stand-in")
    else:
        inv.ignored.append(f"--{name}")


def _apply_bool(inv: Invocation, name: str) -> None:
    if name in ("containall", "compat"):
        inv.contain = inv.cleanenv = inv.pid_ns = inv.ipc_ns = True
        if name == "compat":
            inv.writable_tmpfs = True
    elif name == "contain":
        inv.contain = True
    elif name == "cleanenv":
        inv.cleanenv = True
    elif name == "pid":
        inv.pid_ns = True
    elif name == "ipc":
        inv.ipc_ns = True
    elif name == "no-home":
        inv.no_home = True
    elif name == "writable-tmpfs":
        inv.writable_tmpfs = True
    elif name in NO_EFFECT:
        inv.ignored.append(f"--{name}")


# --- env files ------------------------------------------------------------------------------------

_ANSI_SIMPLE = {
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "v": "\v",
    "e": "\x1b",
    "E": "\x1b",
    "\\": "\\",
    "'": "'",
    '"': '"',
    "?": "?",
}


def parse_env_file(text: str, origin: str = "env file") -> dict[str, str]:
    """Shell-style assignments, the way a shell-quoting writer emits them. Accepted, per statement:

      [export ]NAME=WORD        several per line allowed, separated by blanks or ';'
      # comment                 from a '#' that starts a word to the end of the line

    WORD concatenates: 'single quoted' (literal, may span lines), "double quoted" (\\ escapes only
    $ ` " \\ and newline), $'ANSI-C quoted' (\\n \\t \\xHH \\uHHHH \\NNN ...), and unquoted characters
    (\\ escapes the next one). No expansion happens: an unescaped $ (other than $') or backtick is an
    error, so a writer that forgot to quote is caught instead of silently changing a value.
    This covers Go's shellescape.Quote, Python's shlex.quote and bash's printf %q.
    """
    out: dict[str, str] = {}
    pos, n, line = 0, len(text), 1

    def err(msg: str) -> UsageError:
        return UsageError(f"{origin}:{line}: {msg}")

    while pos < n:
        c = text[pos]
        if c == "\n":
            line += 1
            pos += 1
            continue
        if c in " \t\r;":
            pos += 1
            continue
        if c == "#":
            while pos < n and text[pos] != "\n":
                pos += 1
            continue
        m = re.compile(r"export[ \t]+").match(text, pos)
        if m:
            pos = m.end()
            continue
        m = NAME_RE.match(text, pos)
        if not m or m.end() >= n or text[m.end()] != "=":
            bad = text[pos:].split("\n", 1)[0][:40]
            raise err(f"expected NAME=VALUE, found {bad!r}")
        name = m.group(0)
        pos = m.end() + 1
        value: list[str] = []
        while pos < n and text[pos] not in " \t\r\n;":
            c = text[pos]
            if c == "'":
                end = text.find("'", pos + 1)
                if end < 0:
                    raise err(f"{name}: unterminated single quote")
                chunk = text[pos + 1 : end]
                line += chunk.count("\n")
                value.append(chunk)
                pos = end + 1
            elif c == '"':
                pos += 1
                while True:
                    if pos >= n:
                        raise err(f"{name}: unterminated double quote")
                    c = text[pos]
                    if c == '"':
                        pos += 1
                        break
                    if c == "\\" and pos + 1 < n and text[pos + 1] in '$`"\\\n':
                        if text[pos + 1] != "\n":  # backslash-newline is a line continuation
                            value.append(text[pos + 1])
                        else:
                            line += 1
                        pos += 2
                        continue
                    if c in "$`":
                        raise err(f"{name}: unescaped {c!r} inside double quotes (the stand-in does not expand)")
                    if c == "\n":
                        line += 1
                    value.append(c)
                    pos += 1
            elif c == "$" and pos + 1 < n and text[pos + 1] == "'":
                pos, chunk = _ansi_c(text, pos + 2, err, name)
                value.append(chunk)
            elif c == "\\":
                if pos + 1 >= n:
                    raise err(f"{name}: trailing backslash")
                if text[pos + 1] != "\n":
                    value.append(text[pos + 1])
                else:
                    line += 1
                pos += 2
            elif c in "$`":
                raise err(f"{name}: unquoted {c!r} (the stand-in does not expand; quote the value)")
            elif c in "|&<>()":
                raise err(f"{name}: unquoted shell metacharacter {c!r}")
            else:
                value.append(c)
                pos += 1
        val = "".join(value)
        if "\0" in val:
            raise err(f"{name}: NUL byte in value")
        out[name] = val
    return out


def _ansi_c(text: str, pos: int, err, name: str) -> tuple[int, str]:
    """The body of $'...' from `pos`. Octal and \\x escapes are bytes (bash's meaning), so the
    result is assembled as bytes and decoded as UTF-8: printf %q writes é as $'\\303\\251'."""
    out = bytearray()
    n = len(text)
    while True:
        if pos >= n:
            raise err(f"{name}: unterminated $'...'")
        c = text[pos]
        if c == "'":
            try:
                return pos + 1, out.decode("utf-8")
            except UnicodeDecodeError:
                raise err(f"{name}: $'...' escapes do not form valid UTF-8") from None
        if c != "\\":
            out += c.encode("utf-8")
            pos += 1
            continue
        if pos + 1 >= n:
            raise err(f"{name}: unterminated $'...'")
        e = text[pos + 1]
        if e in _ANSI_SIMPLE:
            out += _ANSI_SIMPLE[e].encode()
            pos += 2
        elif e == "x":
            m = re.compile("[0-9A-Fa-f]{1,2}").match(text, pos + 2)
            if not m:
                raise err(f"{name}: bad \\x escape in $'...'")
            out.append(int(m.group(0), 16))
            pos = m.end()
        elif e in "uU":
            m = re.compile(f"[0-9A-Fa-f]{{1,{4 if e == 'u' else 8}}}").match(text, pos + 2)
            if not m:
                raise err(f"{name}: bad \\{e} escape in $'...'")
            out += chr(int(m.group(0), 16)).encode("utf-8", "surrogatepass")
            pos = m.end()
        elif e in "01234567":
            m = re.compile("[0-7]{1,3}").match(text, pos + 1)
            assert m is not None
            out.append(int(m.group(0), 8) & 0xFF)
            pos = m.end()
        elif e == "c" and pos + 2 < n:
            out.append(ord(text[pos + 2]) & 0x1F)
            pos += 3
        else:
            out += ("\\" + e).encode()
            pos += 2


# --- mount points that do not exist in the image ------------------------------------------------
# Apptainer binds onto paths the image lacks (a pod's /var/run/secrets/..., /etc/app/config) by
# layering: an "underlay" directory holding the image directory's entries plus the new mount point.
# bwrap cannot create a directory inside a read-only bind, so the stand-in does the same: a tmpfs over
# the deepest existing image directory, each original entry bound back read-only (symlinks recreated),
# the new mount point created in the tmpfs, and the tmpfs made read-only again afterwards.

MAX_SYMLINKS = 40  # like the kernel's limit when resolving a path


@dataclass(frozen=True)
class PathInfo:
    """What a path of the container view is, as far as mount points go."""

    kind: str  # "dir" | "file" | "symlink" | "missing" | "volatile" (not image-backed: bwrap can create it)
    target: str = ""  # a symlink's target


Probe = Callable[[str], PathInfo]
Entry = tuple[str, "str | None"]  # (name, symlink target or None) of an image directory's entry


@dataclass(frozen=True)
class MountPoint:
    dst: str  # where bwrap mounts: the bind destination with the image's symlinks resolved
    underlay: str | None  # the existing read-only image directory the mount point must be created in


def mount_point(dst: str, probe: Probe) -> MountPoint:
    """Resolve `dst` in the container view and find where a missing mount point has to be created."""
    parts = [p for p in posixpath.normpath(dst).split("/") if p]
    cur, hops = "/", 0
    while parts:
        name = parts.pop(0)
        path = posixpath.join(cur, name)
        info = probe(path)
        if info.kind == "symlink":
            hops += 1
            if hops > MAX_SYMLINKS:
                raise UsageError(f"--bind destination {dst!r}: too many levels of symbolic links")
            target = posixpath.normpath(posixpath.join(cur, info.target))
            parts = [p for p in target.split("/") if p] + parts
            cur = "/"
        elif info.kind == "dir":
            cur = path
        elif info.kind == "file":
            if parts:
                raise UsageError(f"--bind destination {dst!r}: {path} is a file in the image")
            return MountPoint(path, None)
        else:  # missing below an image directory, or anywhere bwrap may create directories itself
            rest = posixpath.join(path, *parts)
            return MountPoint(rest, cur if info.kind == "missing" and cur != "/" else None)
    return MountPoint(cur, None)


def underlay_argv(directory: str, entries: list[Entry], source_root: str = "") -> list[str]:
    """A tmpfs over `directory` that shows the same entries (bound back read-only from `source_root` +
    path: the host for the host view, the sandbox directory for a sandbox image) and takes new ones."""
    a = ["--tmpfs", directory]
    for name, target in sorted(entries):
        path = posixpath.join(directory, name)
        a += ["--symlink", target, path] if target is not None else ["--ro-bind", source_root + path, path]
    return a


# --- the container's environment and the bwrap command --------------------------------------------


def container_env(
    inv: Invocation, host_env: dict[str, str], env_files: list[dict[str, str]], home: str
) -> dict[str, str]:
    """Apptainer's order: host env (unless --cleanenv) < APPTAINERENV_/SINGULARITYENV_ < env files < --env."""
    env: dict[str, str]
    if inv.cleanenv:
        env = {k: host_env[k] for k in ("TERM", "LANG", "LC_ALL") if k in host_env}
    else:
        # apptainer never passes the host PATH or LD_LIBRARY_PATH into the container
        env = {
            k: v
            for k, v in host_env.items()
            if k not in ("PATH", "LD_LIBRARY_PATH") and not k.startswith(("APPTAINERENV_", "SINGULARITYENV_"))
        }
    env["HOME"] = home
    env["PATH"] = CONTAINER_PATH
    for prefix in ("SINGULARITYENV_", "APPTAINERENV_"):
        for k, v in host_env.items():
            if k.startswith(prefix) and NAME_RE.fullmatch(k[len(prefix) :]):
                env[k[len(prefix) :]] = v
    for values in env_files:
        env.update(values)
    env.update(inv.env)
    for k in ("SINGULARITY_CONTAINER", "APPTAINER_CONTAINER"):
        env[k] = inv.image
    for k in ("SINGULARITY_NAME", "APPTAINER_NAME"):
        env[k] = inv.image.rsplit("/", 1)[-1]
    return env


@dataclass(frozen=True)
class HostRoot:
    """What the stand-in needs to know about the host's top-level directory."""

    symlinks: dict[str, str]  # name → link target, e.g. bin → usr/bin
    dirs: list[str]  # IMAGE_DIRS that exist as real directories


def bwrap_argv(
    inv: Invocation,
    bwrap: str,
    root: HostRoot | None,
    sandbox: str | None,
    cwd: str,
    home: str,
    host_home_exists: bool,
    run_default: list[str],
    probe: Probe | None = None,
    list_dir: Callable[[str], list[Entry]] | None = None,
) -> list[str]:
    """The bwrap command line for `inv`. `root` is the host view; `sandbox` a directory image instead.

    With `probe` (what a container path is) and `list_dir` (an image directory's entries), binds onto
    paths the image lacks get an underlay (see mount_point); without them, bwrap is left to cope."""
    mounts = {b.dst: mount_point(b.dst, probe) for b in inv.binds} if probe is not None else {}
    underlays = sorted({m.underlay for m in mounts.values() if m.underlay}, key=lambda d: (d.count("/"), d))
    if underlays and list_dir is None:
        raise ValueError("list_dir is needed to build underlays")
    a = [bwrap, "--die-with-parent"]
    if inv.pid_ns:
        a.append("--unshare-pid")
    if inv.ipc_ns:
        a.append("--unshare-ipc")
    if inv.hostname:
        a += ["--unshare-uts", "--hostname", inv.hostname]
    if sandbox is not None:
        a += ["--bind" if inv.writable_tmpfs else "--ro-bind", sandbox, "/"]
    else:
        assert root is not None
        for name, target in sorted(root.symlinks.items()):
            a += ["--symlink", target, f"/{name}"]
        for name in root.dirs:
            a += ["--ro-bind", f"/{name}", f"/{name}"]
    for directory in underlays:  # parents first: a deeper underlay is built inside a shallower one
        assert list_dir is not None
        a += underlay_argv(directory, list_dir(directory), sandbox or "")
    a += ["--proc", "/proc", "--ro-bind", "/sys", "/sys"]
    a += ["--dev", "/dev"] if inv.contain else ["--dev-bind", "/dev", "/dev"]
    for tmp in ("/tmp", "/var/tmp"):
        if inv.contain or "tmp" in inv.no_mount:
            a += ["--tmpfs", tmp]
        else:
            a += ["--bind", tmp, tmp]
    if inv.home is not None:
        src, _, dst = inv.home.partition(":")
        a += ["--bind", src, dst or src]
    elif inv.contain or inv.no_home or "home" in inv.no_mount or not host_home_exists:
        a += ["--tmpfs", home]  # an empty, writable home, as apptainer gives with --contain
    else:
        a += ["--bind", home, home]
    workdir = inv.pwd
    if not inv.contain and "cwd" not in inv.no_mount:
        a += ["--bind", cwd, cwd]
        workdir = workdir or cwd
    for b in inv.binds:
        dst = mounts[b.dst].dst if b.dst in mounts else b.dst
        a += ["--ro-bind" if b.readonly else "--bind", b.src, dst]
    if not inv.writable_tmpfs:
        for directory in reversed(underlays):
            a += ["--remount-ro", directory]  # the image directory is read-only again, new mount points included
    if sandbox is None and not inv.writable_tmpfs:
        a += ["--remount-ro", "/"]  # images are read-only unless --writable-tmpfs
    a += ["--chdir", workdir or home]
    if inv.command == "exec":
        cmd = inv.args
    elif inv.command == "shell":
        cmd = ["/bin/sh", *inv.args]
    else:  # run: a docker image without ENTRYPOINT runs its CMD, and arguments replace the CMD
        cmd = inv.args or run_default
    return [*a, "--", *cmd]
