"""Smoke tests of the singularity stand-in (TEST SCAFFOLDING, hack/bin/singularity) over real bwrap."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from tests.conftest import Testbed

pytestmark = pytest.mark.integration

HOSTILE_VALUES = {
    "SINGLE": "it's",
    "DOUBLE": 'say "hi"',
    "DOLLAR": "$HOME and ${PATH} and $(id) and $'x'",
    "BACKTICK": "`id -u`",
    "NEWLINES": "line1\nline2\n\nline4\n",
    "TABS_SPACES": "  leading and trailing\t ",
    "BACKSLASH": "C:\\path\\n\\t\\\\",
    "NON_ASCII": "żółć 日本語 🚀 \u00e9",
    "SHELL_META": "a;b && c || d | e > f < g & (h) {i} #j ~k *l ?m [n] !o",
    "EQUALS_COMMAS": "k=v,k2=v2,=,",
    "JSON": '{"a": [1, "two", {"three": null}], "q": "\\"x\\""}',
    "EMPTY": "",
    "HASH_START": "#not a comment",
    "CONTROL": "bell\a esc\x1b del\x7f",
    "CARRIAGE_RETURNS": "crlf\r\nlone\rend\r",
}


def test_runs_a_command_inside_the_image_rootfs_with_a_bind_mount_and_passes_exit_code(
    testbed: Testbed, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "in.txt").write_text("from the host\n")
    script = (
        "cat /data/in.txt; echo written-inside > /data/out.txt; "
        f"test -e {shlex.quote(str(tmp_path))} && echo HOST-TMP-VISIBLE; "  # --containall hides the host's /tmp
        "test -e /work && echo HOST-WORK-VISIBLE; "  # only the image directories are there
        "touch /not-writable 2>/dev/null && echo ROOT-WRITABLE; "
        "exit 7"
    )
    proc = testbed.run(
        [
            testbed.singularity,
            "exec",
            "--nv",
            "--no-eval",
            "--containall",
            "--bind",
            f"{data}:/data:rw",
            "docker://busybox:1.36",
            "/bin/sh",
            "-c",
            script,
        ],
        check=False,
    )
    assert proc.returncode == 7, proc.stderr
    assert proc.stdout == "from the host\n"
    assert (data / "out.txt").read_text() == "written-inside\n"


def test_read_only_bind_cannot_be_written(testbed: Testbed, tmp_path: Path) -> None:
    proc = testbed.run(
        [
            testbed.singularity,
            "exec",
            "--containall",
            "-B",
            f"{tmp_path}:/ro:ro",
            "docker://alpine:3.20",
            "sh",
            "-c",
            "echo x > /ro/f",
        ],
        check=False,
    )
    assert proc.returncode != 0
    assert not (tmp_path / "f").exists()


def test_binds_onto_paths_the_image_lacks_work_like_apptainer_and_leave_the_host_alone(
    testbed: Testbed, tmp_path: Path
) -> None:
    """A pod's service-account token under /var/run/secrets/... and a ConfigMap under /etc/app: the
    mount points are created in the container only (apptainer's underlay), the image stays read-only
    and complete, and nothing appears on the host."""
    token, config = tmp_path / "token", tmp_path / "config"
    token.mkdir()
    config.mkdir()
    (token / "token").write_text("sa-token")
    (config / "app.yaml").write_text("key: value")
    script = (
        "cat /var/run/secrets/kubernetes.io/serviceaccount/token; echo; cat /etc/app/config/app.yaml; echo; "
        "test -f /etc/hostname && echo image-etc-intact; "
        "touch /etc/new-file 2>/dev/null && echo ETC-WRITABLE; "
        "echo out > /var/run/secrets/kubernetes.io/serviceaccount/written && echo rw-bind-writable"
    )
    proc = testbed.run(
        [
            testbed.singularity,
            "exec",
            "--containall",
            "-B",
            f"{token}:/var/run/secrets/kubernetes.io/serviceaccount",
            "-B",
            f"{config}:/etc/app/config:ro",
            "docker://busybox:1.36",
            "sh",
            "-c",
            script,
        ],
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["sa-token", "key: value", "image-etc-intact", "rw-bind-writable"]
    assert (token / "written").read_text() == "out\n"
    assert not Path("/etc/app").exists() and not Path("/run/secrets/kubernetes.io").exists()


def test_env_file_values_with_hostile_characters_survive(testbed: Testbed, tmp_path: Path) -> None:
    env_file = tmp_path / "main_envfile.properties"
    env_file.write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in HOSTILE_VALUES.items()), encoding="utf-8")
    dump = "import json, os, sys; sys.stdout.write(json.dumps({k: os.environ.get(k) for k in sys.argv[1:]}))"
    proc = testbed.run(
        [
            testbed.singularity,
            "exec",
            "--containall",
            "--cleanenv",
            "--no-eval",
            "--env-file",
            env_file,
            "docker://python:3.11-alpine",
            "python",
            "-c",
            dump,
            *HOSTILE_VALUES,
        ]
    )
    assert json.loads(proc.stdout) == HOSTILE_VALUES


def test_pwd_env_and_cleanenv_are_honoured(testbed: Testbed, tmp_path: Path) -> None:
    proc = testbed.run(
        [
            testbed.singularity,
            "exec",
            "--containall",
            "--cleanenv",
            "--env",
            "GREETING=hello, world",
            "--bind",
            f"{tmp_path}:/work",
            "--pwd",
            "/work",
            "docker://bash:5",
            "bash",
            "-c",
            'echo "$PWD|$GREETING|${HOST_ONLY-unset}"',
        ],
        env={"HOST_ONLY": "leaks"},
    )
    assert proc.stdout == "/work|hello, world|unset\n"
    passed = testbed.run(
        [testbed.singularity, "exec", "docker://bash:5", "bash", "-c", 'echo "${HOST_ONLY-unset}"'],
        env={"HOST_ONLY": "passes"},
    )
    assert passed.stdout == "passes\n"  # without --cleanenv the host environment goes in, as in apptainer


def test_unknown_option_is_a_clear_error(testbed: Testbed) -> None:
    proc = testbed.run([testbed.singularity, "exec", "--frobnicate", "docker://busybox", "true"], check=False)
    assert proc.returncode == 255
    assert "--frobnicate" in proc.stderr


def test_each_invocation_is_logged_as_json(testbed: Testbed, tmp_path: Path) -> None:
    log = tmp_path / "invocations.jsonl"
    argv = ["exec", "--containall", "docker://busybox", "sh", "-c", "exit 0"]
    testbed.run([testbed.singularity, *argv], env={"VNODE_SINGULARITY_LOG": str(log)})
    testbed.run([testbed.standin_dir / "apptainer", *argv], env={"VNODE_SINGULARITY_LOG": str(log)})
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["argv"] for e in entries] == [["singularity", *argv], ["apptainer", *argv]]


def test_container_exit_code_reaches_sacct_through_a_slurm_job(testbed: Testbed, tmp_path: Path) -> None:
    (tmp_path / "job.sh").write_text(
        "#!/bin/bash\n"
        f"{shlex.quote(str(testbed.singularity))} exec --containall --bind {shlex.quote(str(tmp_path))}:/out "
        'docker://python:3.11 python -c \'import sys; open("/out/ran", "w").write("yes"); sys.exit(42)\'\n'
    )
    job = testbed.submit_job(tmp_path, "--mem=128M", str(tmp_path / "job.sh"))
    states = testbed.wait_jobs_finished([job])
    assert states[job] == ("FAILED", "42:0")
    assert (tmp_path / "ran").read_text() == "yes"
