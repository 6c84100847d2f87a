"""The kubelet front's plugin-backed backends against the in-memory fake plugin, reached through a
real plugin_client.PluginClient on a unix socket (and, at the end, through the TLS front itself)."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from plugin_client.client import ClientConfig, PluginClient
from plugin_client.endpoint import Endpoint
from plugin_client.errors import PermanentPluginError, TransientPluginError
from plugin_client.models import LogOpts, LogStruct, RetrievedPodData
from plugin_client.server import make_app, start_server
from tests.fakeplugin import FakeBackend, FakePlugin
from tests.kubelet_clients import Env, get, upgrade
from tests.kubelet_support import InMemoryReviews
from vnode import spdy
from vnode.kubelet.auth import RequestAuthority
from vnode.kubelet.backends import (
    BackendError,
    ExecFailed,
    ExecNotSupported,
    ExecSpec,
    NotFound,
    TerminalSize,
)
from vnode.kubelet.plugin_backends import (
    CachedPods,
    PluginExec,
    PluginLogs,
    container_names,
    log_opts,
)
from vnode.kubelet.requests import LogOptions
from vnode.kubelet.server import KubeletServer, KubeletServerSettings
from vnode.kubelet.tls import ServingTLS

UID = "5a4e8c1f-3b2d-4e6f-9a8b-7c6d5e4f3a2b"
NODE = "vnode-plugin-backends"


def make_pod(name: str = "job", uid: str = UID) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"namespace": "team", "name": name, "uid": uid},
        "spec": {
            "nodeName": NODE,
            "initContainers": [{"name": "setup", "image": "busybox"}],
            "containers": [{"name": "main", "image": "busybox"}, {"name": "side", "image": "busybox"}],
        },
    }


@dataclass
class RecordsCache:
    """What the pod controller offers: find by namespace/name, list all (sync, in memory)."""

    pods: list[dict[str, Any]] = field(default_factory=list)

    def find(self, namespace: str, name: str) -> dict[str, Any] | None:
        for pod in self.pods:
            if (pod["metadata"]["namespace"], pod["metadata"]["name"]) == (namespace, name):
                return pod
        return None

    def list_pods(self) -> Sequence[dict[str, Any]]:
        return list(self.pods)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="kpb-", dir="/tmp"))  # unix socket paths must stay short
    yield path
    shutil.rmtree(path, ignore_errors=True)


@dataclass
class Rig:
    backend: FakeBackend
    plugin: FakePlugin
    client: PluginClient
    cache: RecordsCache
    pods: CachedPods
    logs: PluginLogs
    execs: PluginExec


@pytest.fixture
async def rig(short_tmp: Path) -> AsyncIterator[Rig]:
    backend = FakeBackend()
    async with FakePlugin(backend, f"unix://{short_tmp}/plugin.sock") as plugin, \
            PluginClient(ClientConfig(endpoint=Endpoint.parse(plugin.url))) as client:
        pod = make_pod()
        await client.create(RetrievedPodData(pod=pod))
        cache = RecordsCache([pod])
        pods = CachedPods(cache)
        yield Rig(backend, plugin, client, cache, pods, PluginLogs(pods, client), PluginExec(client))


async def read(stream: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in stream])


# ---- the LogOpts mapping -------------------------------------------------------------------------


def test_log_options_map_field_for_field_to_interlinks_log_opts() -> None:
    since = dt.datetime(2026, 11, 25, 20, 0, 0, tzinfo=dt.UTC)
    options = LogOptions(follow=True, previous=True, timestamps=True, since_time=since, tail_lines=7)
    assert log_opts(options) == LogOpts(tail=7, limit_bytes=0, timestamps=True, follow=True,
                                        previous=True, since_seconds=0, since_time=since)
    assert log_opts(LogOptions(since_seconds=30, limit_bytes=100)) == LogOpts(since_seconds=30, limit_bytes=100)


def test_unset_log_options_are_interlinks_zero_values_on_the_wire() -> None:
    assert log_opts(LogOptions()).to_wire() == {
        "Tail": 0, "Bytes": 0, "Timestamps": False, "Follow": False, "Previous": False,
        "SinceSeconds": 0, "SinceTime": "0001-01-01T00:00:00Z",
    }


def test_tail_with_limit_bytes_sends_only_tail_because_interlink_refuses_both() -> None:
    wire = log_opts(LogOptions(tail_lines=3, limit_bytes=10)).to_wire()
    assert (wire["Tail"], wire["Bytes"]) == (3, 0)


def test_container_names_include_init_and_ephemeral_containers() -> None:
    pod = make_pod()
    pod["spec"]["ephemeralContainers"] = [{"name": "debugger"}]
    assert container_names(pod) == {"setup", "main", "side", "debugger"}


# ---- pods ----------------------------------------------------------------------------------------


async def test_pod_lookup_reads_the_agents_cache(rig: Rig) -> None:
    assert (await rig.pods.get_pod("team", "job")) is rig.cache.pods[0]
    assert await rig.pods.get_pod("team", "other") is None
    assert [p["metadata"]["uid"] for p in await rig.pods.list_pods()] == [UID]


# ---- logs ----------------------------------------------------------------------------------------


async def test_logs_reach_the_plugin_with_the_cached_pods_uid_and_options(rig: Rig) -> None:
    rig.backend.append_log(UID, "main", b"a\nb\nc\n")
    stream = await rig.logs.logs("team", "job", "main", LogOptions(tail_lines=2, timestamps=True))
    assert await read(stream) == b"b\nc\n"
    sent: LogStruct = rig.backend.calls_of("logs")[-1].payload
    assert sent == LogStruct("team", UID, "job", "main", LogOpts(tail=2, timestamps=True))


async def test_init_container_logs_are_served(rig: Rig) -> None:
    rig.backend.append_log(UID, "setup", b"prepared\n")
    assert await read(await rig.logs.logs("team", "job", "setup", LogOptions())) == b"prepared\n"


async def test_a_container_not_in_the_pod_spec_is_404_without_asking_the_plugin(rig: Rig) -> None:
    with pytest.raises(NotFound, match="container 'ghost' is not valid for pod team/job"):
        await rig.logs.logs("team", "job", "ghost", LogOptions())
    with pytest.raises(NotFound, match="pod team/nope is not on this node"):
        await rig.logs.logs("team", "nope", "main", LogOptions())
    assert rig.backend.calls_of("logs") == []


async def test_a_pod_the_plugin_does_not_know_is_404(rig: Rig) -> None:
    rig.cache.pods.append(make_pod("never-created", uid="11111111-2222-3333-4444-555555555555"))
    with pytest.raises(NotFound, match="the plugin does not know it"):
        await rig.logs.logs("team", "never-created", "main", LogOptions())


async def test_an_unreachable_plugin_is_503(rig: Rig) -> None:
    await rig.plugin.stop()
    with pytest.raises(BackendError) as caught:
        await rig.logs.logs("team", "job", "main", LogOptions())
    assert caught.value.status == 503


async def test_a_failing_plugin_is_500_with_its_message(rig: Rig) -> None:
    rig.backend.fail("logs", PermanentPluginError("disk on fire", status=400))
    with pytest.raises(BackendError, match="disk on fire") as caught:
        await rig.logs.logs("team", "job", "main", LogOptions())
    assert caught.value.status == 500


async def test_zero_tail_lines_without_follow_is_empty_without_a_plugin_call(rig: Rig) -> None:
    rig.backend.append_log(UID, "main", b"old\n")
    assert await read(await rig.logs.logs("team", "job", "main", LogOptions(tail_lines=0))) == b""
    assert rig.backend.calls_of("logs") == []


async def test_follow_streams_new_lines_until_the_container_ends(rig: Rig) -> None:
    rig.backend.append_log(UID, "main", b"first\n")
    stream = await rig.logs.logs("team", "job", "main", LogOptions(follow=True))
    seen = b""
    async for chunk in stream:
        seen += chunk
        if seen == b"first\n":
            rig.backend.append_log(UID, "main", b"second\n")
        elif seen == b"first\nsecond\n":
            rig.backend.finish(UID)
    assert seen == b"first\nsecond\n"
    assert rig.backend.calls_of("logs")[-1].payload.opts.follow is True


async def test_closing_a_followed_stream_early_releases_it(rig: Rig) -> None:
    rig.backend.append_log(UID, "main", b"tick\n")
    stream = await rig.logs.logs("team", "job", "main", LogOptions(follow=True))
    assert await anext(stream) == b"tick\n"
    await stream.aclose()  # type: ignore[attr-defined]
    # The plugin connection is released: the next request is served normally.
    assert await read(await rig.logs.logs("team", "job", "main", LogOptions())) == b"tick\n"


async def test_a_stream_that_breaks_midway_raises_backend_error(rig: Rig) -> None:
    class Broken:
        async def logs(self, request: LogStruct) -> AsyncIterator[bytes]:
            async def chunks() -> AsyncIterator[bytes]:
                yield b"partial\n"
                raise TransientPluginError("log stream broken: reset", op="logs")
            return chunks()

    stream = await PluginLogs(rig.pods, Broken()).logs("team", "job", "main", LogOptions())
    assert await anext(stream) == b"partial\n"
    with pytest.raises(BackendError, match="reset") as caught:
        await anext(stream)
    assert caught.value.status == 503


# ---- exec ----------------------------------------------------------------------------------------


def spec(*command: str, stdin: bool = False, tty: bool = False, uid: str = UID) -> ExecSpec:
    return ExecSpec("team", "job", uid, "main", command, stdin=stdin, stdout=True, stderr=not tty, tty=tty)


async def run(session: Any) -> tuple[dict[str, bytes], int]:
    out = {"stdout": b"", "stderr": b""}
    async for channel, data in session.output():
        out[channel] += data
    return out, await session.wait()


async def test_exec_output_and_exit_code_come_from_the_plugin(rig: Rig) -> None:
    session = await rig.execs.exec(spec("echo", "hello", "world"))
    assert await run(session) == ({"stdout": b"hello world\n", "stderr": b""}, 0)
    await session.close()
    session = await rig.execs.exec(spec("exit", "3"))
    assert (await run(session))[1] == 3
    await session.close()
    request = rig.backend.calls_of("exec")[0].payload
    assert (request.pod_uid, request.pod_name, request.container, request.command) == (
        UID, "job", "main", ("echo", "hello", "world"))


async def test_exec_stdin_and_its_end_reach_the_command(rig: Rig) -> None:
    session = await rig.execs.exec(spec("cat", stdin=True))
    await session.send_stdin(b"piped ")
    await session.send_stdin(b"data")
    await session.close_stdin()
    assert await run(session) == ({"stdout": b"piped data", "stderr": b""}, 0)
    await session.close()


async def test_exec_stderr_stays_separate(rig: Rig) -> None:
    session = await rig.execs.exec(spec("stderr", "oops"))
    assert await run(session) == ({"stdout": b"", "stderr": b"oops\n"}, 0)
    await session.close()


async def test_terminal_resizes_reach_the_command(rig: Rig) -> None:
    session = await rig.execs.exec(spec("watch-resize", stdin=True, tty=True))
    await session.resize(TerminalSize(120, 40))
    output = session.output()
    assert await anext(output) == ("stdout", b"120x40\n")
    await session.close_stdin()
    assert [item async for item in output] == []
    assert await session.wait() == 0
    await session.close()


async def test_exec_without_an_exit_code_raises_exec_failed_with_the_plugins_status(rig: Rig) -> None:
    session = await rig.execs.exec(spec("echo", uid="99999999-8888-7777-6666-555555555555"))
    with pytest.raises(ExecFailed, match="not known to this plugin") as caught:
        await run(session)
    assert caught.value.status is not None and caught.value.status["status"] == "Failure"
    await session.close()


async def test_a_plugin_without_exec_is_exec_not_supported(short_tmp: Path) -> None:
    class NoExecBackend(FakeBackend):
        exec = None  # type: ignore[assignment]  # make_app then serves no /exec route

    server = await start_server(make_app(NoExecBackend()), [f"unix://{short_tmp}/noexec.sock"])
    try:
        async with PluginClient(ClientConfig(endpoint=Endpoint.parse(server.urls[0]))) as client:
            with pytest.raises(ExecNotSupported, match="exec not supported by this plugin"):
                await PluginExec(client).exec(spec("echo"))
    finally:
        await server.close()


async def test_attach_is_not_supported_by_the_plugin_api(rig: Rig) -> None:
    with pytest.raises(ExecNotSupported, match="attach not supported"):
        await rig.execs.attach(spec())
    assert rig.backend.calls_of("exec") == []


# ---- through the TLS front -----------------------------------------------------------------------


@pytest.fixture
async def front(rig: Rig, tmp_path: Path) -> AsyncIterator[tuple[KubeletServer, Env]]:
    env = Env(tmp_path)
    server = KubeletServer(
        KubeletServerSettings(node_name=NODE, host="127.0.0.1", port=0),
        tls=ServingTLS(env.cert_file, env.key_file, env.ca_file),
        authority=RequestAuthority(InMemoryReviews(grants={"apiserver": {("*", "*")}}), NODE),
        pods=rig.pods, logs=rig.logs, execs=rig.execs,
    )
    async with server:
        yield server, env


async def test_container_logs_through_the_front_come_from_the_plugin(rig: Rig, front: tuple[KubeletServer, Env]) -> None:
    server, env = front
    rig.backend.append_log(UID, "side", b"1\n2\n3\n")
    assert (await get(server, env, "/containerLogs/team/job/side?tailLines=1"))[:2] == (200, b"3\n")
    rig.cache.pods.append(make_pod("unknown-to-plugin", uid="11111111-2222-3333-4444-555555555555"))
    status, body, _ = await get(server, env, "/containerLogs/team/unknown-to-plugin/main")
    assert status == 404 and b"the plugin does not know it" in body
    await rig.plugin.stop()
    status, body, _ = await get(server, env, "/containerLogs/team/job/side")
    assert status == 503 and b"plugin unavailable" in body


async def test_spdy_exec_through_the_front_runs_in_the_plugin(rig: Rig, front: tuple[KubeletServer, Env]) -> None:
    server, env = front
    peer = await upgrade(server, env, "/exec/team/job/main?command=cat&input=1&output=1&error=1")
    ids = {}
    for kind in ("error", "stdin", "stdout", "stderr"):
        sid, raw = peer.conn.open_stream({"streamtype": [kind]})
        ids[kind] = sid
        peer.write(raw)
    await peer.pump_until(lambda: sum(isinstance(e, spdy.SynReply) for e in peer.events) == 4)
    peer.write(peer.conn.send_data(ids["stdin"], b"through the plugin", fin=True))
    await peer.pump_until(lambda: ids["error"] in peer.fins and ids["stdout"] in peer.fins)
    assert peer.data[ids["stdout"]] == b"through the plugin"
    assert json.loads(peer.data[ids["error"]]) == {"metadata": {}, "status": "Success"}
    await peer.client.close()


async def test_spdy_exec_failure_without_exit_code_is_passed_on_as_the_plugins_status(
    rig: Rig, front: tuple[KubeletServer, Env]
) -> None:
    server, env = front
    rig.backend.pods.clear()  # the plugin lost the pod: its Status says so
    peer = await upgrade(server, env, "/exec/team/job/main?command=echo&output=1")
    ids = {}
    for kind in ("error", "stdout"):
        sid, raw = peer.conn.open_stream({"streamtype": [kind]})
        ids[kind] = sid
        peer.write(raw)
    await peer.pump_until(lambda: ids["error"] in peer.fins)
    final = json.loads(peer.data[ids["error"]])
    assert final["status"] == "Failure" and "not known to this plugin" in final["message"]
    await peer.client.close()
