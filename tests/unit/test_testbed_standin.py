"""The singularity stand-in's command line (TEST SCAFFOLDING): argv parsing, env order, bwrap plan."""

from __future__ import annotations

import pytest
from testbedlib.standin import (
    Bind,
    HostRoot,
    Invocation,
    MountPoint,
    PathInfo,
    UsageError,
    bwrap_argv,
    container_env,
    default_runscript,
    mount_point,
    parse_argv,
    parse_bind_list,
    parse_env_option,
)

ROOT = HostRoot(symlinks={"bin": "usr/bin", "lib": "usr/lib"}, dirs=["usr", "etc"])


def test_the_go_plugins_argv_parses() -> None:
    # The shape interLink's SLURM plugin emits (defaults --nv --no-eval --containall).
    inv = parse_argv(
        [
            "exec",
            "--nv",
            "--no-eval",
            "--containall",
            "--cleanenv",
            "--env-file",
            "/p/main_envfile.properties",
            "--bind",
            "/p/cm/cfg/key:/etc/cfg/key:rw",
            "--bind",
            "/p/emptyDirs/data:/data:rw",
            "docker://python:3.11",
            "python",
            "-c",
            "print('hi')",
        ]
    )
    assert inv.command == "exec"
    assert inv.image == "docker://python:3.11"
    assert inv.args == ["python", "-c", "print('hi')"]
    assert inv.env_files == ["/p/main_envfile.properties"]
    assert inv.binds == [Bind("/p/cm/cfg/key", "/etc/cfg/key", False), Bind("/p/emptyDirs/data", "/data", False)]
    assert inv.contain and inv.cleanenv and inv.pid_ns
    assert set(inv.ignored) == {"--nv", "--no-eval"}


def test_options_after_the_image_belong_to_the_command() -> None:
    inv = parse_argv(["exec", "img", "ls", "--bind", "-la"])
    assert inv.args == ["ls", "--bind", "-la"]
    assert inv.binds == []


@pytest.mark.parametrize(
    "argv",
    [["exec", "-B", "/a:/b", "i", "c"], ["exec", "-B/a:/b", "i", "c"], ["exec", "--bind=/a:/b", "i", "c"]],
)
def test_every_flag_spelling_is_accepted(argv: list[str]) -> None:
    assert parse_argv(argv).binds == [Bind("/a", "/b", False)]


def test_bind_lists_and_options() -> None:
    assert parse_bind_list("/a,/b:/c,/d:/e:ro,/f:/g:rw") == [
        Bind("/a", "/a", False),
        Bind("/b", "/c", False),
        Bind("/d", "/e", True),
        Bind("/f", "/g", False),
    ]


@pytest.mark.parametrize(
    ("spec", "complaint"),
    [("rel:/x", "absolute"), ("/a:/b:nosuid", "unsupported option 'nosuid'"), ("/a:/b:ro:x", "expected src")],
)
def test_bad_bind_specs_are_rejected(spec: str, complaint: str) -> None:
    with pytest.raises(UsageError, match=complaint):
        parse_bind_list(spec)


def test_env_option_follows_apptainers_flag_parsing() -> None:
    assert parse_env_option("A=1,2,3") == {"A": "1,2,3"}  # one '=': the whole text is the value
    assert parse_env_option("A=1,B=2") == {"A": "1", "B": "2"}  # several: a CSV list
    assert parse_env_option('"A=quoted"') == {"A": "quoted"}
    with pytest.raises(UsageError, match="NAME=VALUE"):
        parse_env_option("novalue")


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["exec", "--bogus", "img", "true"], "unknown flag '--bogus'"),
        (["exec", "--nv=true", "img", "true"], "unknown flag '--nv=true'"),
        (["exec", "img"], "needs a COMMAND"),
        (["exec", "--bind"], "needs a value"),
        (["build", "x.sif", "docker://busybox"], "unknown command 'build'"),
        (["exec", "--security", "seccomp:x", "img", "true"], "--security is not supported"),
        ([], "usage"),
    ],
)
def test_bad_command_lines_name_the_problem(argv: list[str], complaint: str) -> None:
    with pytest.raises(UsageError, match=complaint):
        parse_argv(argv)


def test_version_and_global_flags() -> None:
    assert parse_argv(["--version"]).command == "version"
    assert parse_argv(["-q", "--debug", "run", "docker://busybox"]).command == "run"


def test_environment_precedence_matches_apptainer() -> None:
    host = {
        "PATH": "/host/bin",
        "LD_LIBRARY_PATH": "/host/lib",
        "KEEP": "host",
        "X": "host",
        "SINGULARITYENV_X": "prefixed",
        "APPTAINERENV_Y": "prefixed-y",
        "TERM": "xterm",
    }
    inv = Invocation("exec", image="docker://busybox:1.36", env={"X": "flag"})
    env = container_env(inv, host, [{"X": "file", "Z": "file"}], home="/root")
    assert env["X"] == "flag"  # --env beats --env-file beats *ENV_ prefixes beats the host
    assert env["Z"] == "file" and env["Y"] == "prefixed-y" and env["KEEP"] == "host"
    assert env["PATH"] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # never the host's
    assert "LD_LIBRARY_PATH" not in env and "SINGULARITYENV_X" not in env
    assert env["SINGULARITY_CONTAINER"] == env["APPTAINER_CONTAINER"] == "docker://busybox:1.36"


def test_cleanenv_keeps_only_terminal_and_locale() -> None:
    inv = Invocation("exec", image="i", cleanenv=True)
    env = container_env(inv, {"SECRET": "s", "TERM": "xterm", "LANG": "C.UTF-8"}, [], home="/root")
    assert "SECRET" not in env and env["TERM"] == "xterm" and env["HOME"] == "/root"


def plan(argv: list[str], cwd: str = "/work/job") -> list[str]:
    return bwrap_argv(parse_argv(argv), "/usr/bin/bwrap", ROOT, None, cwd, "/root", True, ["/bin/sh"])


def pairs(a: list[str], flag: str) -> list[tuple[str, str]]:
    return [(a[i + 1], a[i + 2]) for i, x in enumerate(a) if x == flag]


def test_containall_gives_private_tmp_home_pid_and_no_cwd() -> None:
    a = plan(["exec", "--containall", "img", "true"])
    assert "--unshare-pid" in a and "--unshare-ipc" in a
    assert [a[i + 1] for i, x in enumerate(a) if x == "--tmpfs"] == ["/tmp", "/var/tmp", "/root"]
    assert pairs(a, "--bind") == []  # nothing of the host is writable inside
    assert a[a.index("--chdir") + 1] == "/root"
    assert a[a.index("--") + 1 :] == ["true"]


def test_default_mode_shares_tmp_home_and_cwd_like_apptainer() -> None:
    a = plan(["exec", "img", "true"])
    binds = pairs(a, "--bind")
    assert ("/tmp", "/tmp") in binds and ("/root", "/root") in binds and ("/work/job", "/work/job") in binds
    assert a[a.index("--chdir") + 1] == "/work/job"
    assert "--unshare-pid" not in a


def test_image_is_the_host_view_read_only_with_user_binds_on_top() -> None:
    a = plan(["exec", "-B", "/data:/in:ro", "-B", "/out:/out", "--pwd", "/in", "img", "true"])
    assert pairs(a, "--symlink") == [("usr/bin", "/bin"), ("usr/lib", "/lib")]
    assert ("/usr", "/usr") in pairs(a, "--ro-bind") and ("/etc", "/etc") in pairs(a, "--ro-bind")
    assert ("/data", "/in") in pairs(a, "--ro-bind") and ("/out", "/out") in pairs(a, "--bind")
    assert a.index("--remount-ro") > a.index("/out")  # root is made read-only after the mountpoints exist
    assert a[a.index("--chdir") + 1] == "/in"


def test_writable_tmpfs_leaves_the_root_writable() -> None:
    assert "--remount-ro" not in plan(["exec", "--writable-tmpfs", "img", "true"])


def test_run_uses_the_images_default_or_the_given_command() -> None:
    assert plan(["run", "docker://busybox"])[-1] == "/bin/sh"
    assert plan(["run", "docker://busybox", "echo", "hi"])[-2:] == ["echo", "hi"]
    assert default_runscript("docker://python:3.11-alpine") == ["python3"]
    assert default_runscript("docker://library/bash:5") == ["/bin/sh"]


# --- binds onto paths the image lacks (apptainer's underlay) -----------------------------------------

# A fake container view: image directories with some content, symlinks like Debian's.
VIEW = {
    "/bin": PathInfo("symlink", "usr/bin"),
    "/usr": PathInfo("dir"),
    "/usr/bin": PathInfo("dir"),
    "/usr/share": PathInfo("dir"),
    "/etc": PathInfo("dir"),
    "/etc/ssl": PathInfo("dir"),
    "/etc/hostname": PathInfo("file"),
    "/var": PathInfo("dir"),
    "/var/run": PathInfo("symlink", "/run"),
    "/var/lock": PathInfo("symlink", "../run/lock"),
    "/loop": PathInfo("symlink", "/loop"),
}
LISTING = {
    "/etc": [("ssl", None), ("hostname", None), ("mtab", "../proc/self/mounts")],
    "/etc/ssl": [("certs", None)],
    "/var": [("run", "/run"), ("lib", None)],
}


def fake_probe(path: str) -> PathInfo:
    if path.split("/")[1] not in ("usr", "etc", "var", "bin", "loop"):
        return PathInfo("volatile")
    return VIEW.get(path, PathInfo("missing"))


def plan_with_view(argv: list[str]) -> list[str]:
    return bwrap_argv(
        parse_argv(argv),
        "/usr/bin/bwrap",
        ROOT,
        None,
        "/w",
        "/root",
        True,
        ["/bin/sh"],
        fake_probe,
        LISTING.__getitem__,
    )


@pytest.mark.parametrize(
    ("dst", "expected"),
    [
        ("/etc/app/config", MountPoint("/etc/app/config", "/etc")),
        ("/etc/ssl/new", MountPoint("/etc/ssl/new", "/etc/ssl")),
        ("/etc/ssl", MountPoint("/etc/ssl", None)),  # exists: bound over as usual
        ("/etc/hostname", MountPoint("/etc/hostname", None)),
        (
            "/var/run/secrets/kubernetes.io/serviceaccount",
            MountPoint("/run/secrets/kubernetes.io/serviceaccount", None),
        ),
        ("/var/lock/x", MountPoint("/run/lock/x", None)),  # relative symlink, outside the image: bwrap creates it
        ("/bin/tool", MountPoint("/usr/bin/tool", "/usr/bin")),
        ("/data/x", MountPoint("/data/x", None)),  # bwrap's own root tmpfs
        ("/usr//share/./a/../b/", MountPoint("/usr/share/b", "/usr/share")),
    ],
)
def test_a_bind_destination_is_resolved_in_the_image_and_gets_an_underlay_where_missing(
    dst: str, expected: MountPoint
) -> None:
    assert mount_point(dst, fake_probe) == expected


def test_a_bind_through_a_file_or_a_symlink_loop_is_a_clear_error() -> None:
    with pytest.raises(UsageError, match="/etc/hostname is a file"):
        mount_point("/etc/hostname/x", fake_probe)
    with pytest.raises(UsageError, match="too many levels of symbolic links"):
        mount_point("/loop/x", fake_probe)


def test_an_underlay_shows_the_image_directory_read_only_and_takes_the_new_mount_point() -> None:
    a = plan_with_view(["exec", "--containall", "-B", "/cfg:/etc/app/config:ro", "img", "true"])
    at = a.index("/etc", a.index("--tmpfs"))
    assert a[at - 1 : at + 1] == ["--tmpfs", "/etc"]
    assert a.index("--tmpfs") > a.index("--ro-bind")  # over the image's /etc bind, not under it
    assert ("/etc/ssl", "/etc/ssl") in pairs(a, "--ro-bind") and ("/etc/hostname", "/etc/hostname") in pairs(
        a, "--ro-bind"
    )
    assert ("../proc/self/mounts", "/etc/mtab") in pairs(a, "--symlink")
    assert ("/cfg", "/etc/app/config") in pairs(a, "--ro-bind")
    assert a.index("/etc/app/config") < a.index("--remount-ro")
    assert [a[i + 1] for i, x in enumerate(a) if x == "--remount-ro"] == ["/etc", "/"]


def test_nested_underlays_are_built_parents_first_and_made_read_only_children_first() -> None:
    a = plan_with_view(["exec", "-B", "/a:/etc/ssl/new", "-B", "/b:/etc/app", "-B", "/c:/etc/other", "img", "true"])
    tmpfs = [a[i + 1] for i, x in enumerate(a) if x == "--tmpfs" and a[i + 1].startswith("/etc")]
    assert tmpfs == ["/etc", "/etc/ssl"]  # one underlay per directory, however many binds land in it
    assert [a[i + 1] for i, x in enumerate(a) if x == "--remount-ro"] == ["/etc/ssl", "/etc", "/"]
    assert ("/a", "/etc/ssl/new") in pairs(a, "--bind")


def test_with_writable_tmpfs_underlays_stay_writable_and_existing_destinations_need_none() -> None:
    assert "--remount-ro" not in plan_with_view(["exec", "--writable-tmpfs", "-B", "/a:/etc/app", "img", "true"])
    a = plan_with_view(["exec", "-B", "/a:/etc/ssl", "-B", "/s:/var/run/secrets/x", "img", "true"])
    assert not [x for i, x in enumerate(a) if x == "--tmpfs" and a[i + 1] in ("/etc", "/var", "/etc/ssl")]
    assert ("/s", "/run/secrets/x") in pairs(a, "--bind")
