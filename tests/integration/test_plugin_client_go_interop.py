"""plugin_client against real Go net/http peers, the kind interLink's API and plugins are.

A stdlib-only Go program (source below, built with the machine's Go toolchain at test time) plays
both roles on a unix socket:

- ``serve``: a Go plugin in the style of interLink's SLURM plugin (``http.NewServeMux`` routes with no
  method restriction, JSON bodies read from GET requests, a flushed follow-mode log stream). Our
  PluginClient talks to it.
- ``call``: interLink's API calling a plugin (GET /status ``[]`` ping, POST /create with one
  RetrievedPodData, GET /status with pods, GET /getLogs, POST /delete). It calls our server helper
  serving the in-memory fake plugin, and decodes every answer with encoding/json.

No testbed is needed, but this needs ``go`` on PATH; without it the test fails saying so.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from plugin_client.client import ClientConfig, PluginClient
from plugin_client.endpoint import Endpoint
from plugin_client.errors import PodNotFound
from plugin_client.models import (
    LogOpts,
    LogStruct,
    RetrievedContainer,
    RetrievedPodData,
)
from tests.fakeplugin import FakeBackend, FakePlugin

pytestmark = pytest.mark.integration

GO_PEER = r"""
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

type createStruct struct {
	PodUID string `json:"PodUID"`
	PodJID string `json:"PodJID"`
}

type retrievedContainer struct {
	Name       string            `json:"name"`
	ConfigMaps []json.RawMessage `json:"configMaps"`
	Secrets    []json.RawMessage `json:"secrets"`
}

type retrievedPodData struct {
	Pod        podMeta              `json:"pod"`
	Containers []retrievedContainer `json:"container"`
}

type podMeta struct {
	Metadata struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
		UID       string `json:"uid"`
	} `json:"metadata"`
}

type terminated struct {
	ExitCode int32 `json:"exitCode"`
}

type containerStatus struct {
	Name  string `json:"name"`
	State struct {
		Terminated *terminated `json:"terminated,omitempty"`
	} `json:"state"`
}

type podStatus struct {
	PodName        string            `json:"name"`
	PodUID         string            `json:"UID"`
	PodNamespace   string            `json:"namespace"`
	JobID          string            `json:"JID"`
	Containers     []containerStatus `json:"containers"`
	InitContainers []containerStatus `json:"initContainers"`
}

type logOpts struct {
	Tail         int       `json:"Tail"`
	LimitBytes   int       `json:"Bytes"`
	Timestamps   bool      `json:"Timestamps"`
	Follow       bool      `json:"Follow"`
	Previous     bool      `json:"Previous"`
	SinceSeconds int       `json:"SinceSeconds"`
	SinceTime    time.Time `json:"SinceTime"`
}

type logStruct struct {
	Namespace     string  `json:"Namespace"`
	PodUID        string  `json:"PodUID"`
	PodName       string  `json:"PodName"`
	ContainerName string  `json:"ContainerName"`
	Opts          logOpts `json:"Opts"`
}

var out = json.NewEncoder(os.Stdout)

func record(r *http.Request, body []byte) {
	out.Encode(map[string]any{
		"method": r.Method, "path": r.URL.Path, "body": string(body),
		"session": r.Header.Get("InterLink-Http-Session"),
		"auth": r.Header.Get("Authorization"), "ctype": r.Header.Get("Content-Type"),
	})
}

func serve(socket string) {
	mux := http.NewServeMux()
	mux.HandleFunc("/create", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		record(r, body)
		var data retrievedPodData
		if err := json.Unmarshal(body, &data); err != nil {
			http.Error(w, err.Error(), http.StatusGatewayTimeout)
			return
		}
		json.NewEncoder(w).Encode(createStruct{PodUID: data.Pod.Metadata.UID, PodJID: fmt.Sprintf("go-%d", len(data.Containers))})
	})
	mux.HandleFunc("/status", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		record(r, body)
		var pods []podMeta
		if err := json.Unmarshal(body, &pods); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if len(pods) == 0 {
			w.Write([]byte(`{"status":"ok","resources":{"cpu":"64","memory":"256Gi"},"taints":[]}`))
			return
		}
		var answer []podStatus
		for i, p := range pods {
			st := containerStatus{Name: "main"}
			st.State.Terminated = &terminated{ExitCode: int32(i)}
			answer = append(answer, podStatus{PodName: p.Metadata.Name, PodUID: p.Metadata.UID, PodNamespace: p.Metadata.Namespace, JobID: "go", Containers: []containerStatus{st}})
		}
		json.NewEncoder(w).Encode(answer)
	})
	mux.HandleFunc("/delete", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		record(r, body)
		var p podMeta
		json.Unmarshal(body, &p)
		if p.Metadata.UID == "unknown" {
			http.Error(w, "pod not found", http.StatusNotFound)
			return
		}
		w.Write([]byte("All containers for submitted Pods have been deleted"))
	})
	mux.HandleFunc("/getLogs", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		record(r, body)
		var req logStruct
		if err := json.Unmarshal(body, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		for i := 0; i < 3; i++ {
			fmt.Fprintf(w, "%s line %d tail=%d follow=%v\n", req.ContainerName, i, req.Opts.Tail, req.Opts.Follow)
			w.(http.Flusher).Flush()
			time.Sleep(20 * time.Millisecond)
		}
	})
	os.Remove(socket)
	listener, err := net.Listen("unix", socket)
	if err != nil {
		panic(err)
	}
	fmt.Fprintln(os.Stderr, "listening")
	http.Serve(listener, mux)
}

func call(socket string) {
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", socket)
	}}}
	do := func(method, path string, body []byte) (int, []byte) {
		req, _ := http.NewRequest(method, "http://unix"+path, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("InterLink-Http-Session", "GoPeer#1")
		resp, err := client.Do(req)
		if err != nil {
			panic(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, data
	}
	report := func(step string, code int, value any, raw []byte) {
		out.Encode(map[string]any{"step": step, "code": code, "value": value, "raw": string(raw)})
	}
	pod := `{"metadata":{"name":"job","namespace":"team","uid":"6c3e9a0e-3f7a-4c55-9d2e-1a2b3c4d5e6f"},"spec":{"containers":[{"name":"main"}]}}`
	code, raw := do("GET", "/status", []byte("[]"))
	var ping map[string]any
	json.Unmarshal(raw, &ping)
	report("ping", code, ping, raw)
	code, raw = do("POST", "/create", []byte(`{"pod":`+pod+`,"container":[{"name":"main","configMaps":null,"projectedvolumemaps":null,"secrets":null,"emptyDirs":null}]}`))
	var created createStruct
	json.Unmarshal(raw, &created)
	report("create", code, created, raw)
	code, raw = do("GET", "/status", []byte("["+pod+"]"))
	var statuses []podStatus
	if err := json.Unmarshal(raw, &statuses); err != nil {
		panic(err)
	}
	report("status", code, statuses, raw)
	code, raw = do("GET", "/getLogs", []byte(`{"Namespace":"team","PodUID":"6c3e9a0e-3f7a-4c55-9d2e-1a2b3c4d5e6f","PodName":"job","ContainerName":"main","Opts":{"Tail":0,"Bytes":0,"Timestamps":false,"Follow":false,"Previous":false,"SinceSeconds":0,"SinceTime":"0001-01-01T00:00:00Z"}}`))
	report("logs", code, nil, raw)
	code, raw = do("POST", "/delete", []byte(pod))
	report("delete", code, nil, raw)
	code, raw = do("POST", "/delete", []byte(pod))
	report("delete-again", code, nil, raw)
}

func main() {
	switch os.Args[1] {
	case "serve":
		serve(os.Args[2])
	case "call":
		call(os.Args[2])
	}
}
"""

UID = "6c3e9a0e-3f7a-4c55-9d2e-1a2b3c4d5e6f"
POD = {"metadata": {"name": "job", "namespace": "team", "uid": UID}, "spec": {"containers": [{"name": "main"}]}}


@pytest.fixture(scope="module")
def go_peer() -> Iterator[Path]:
    go = shutil.which("go")
    if go is None:
        pytest.fail("the Go toolchain (`go`) is needed to build the Go interop peer and is not on PATH")
    workdir = Path(tempfile.mkdtemp(prefix="gopeer-", dir="/tmp"))
    (workdir / "go.mod").write_text("module gopeer\n\ngo 1.22\n")
    (workdir / "main.go").write_text(GO_PEER)
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GOPROXY": "off", "CGO_ENABLED": "0"}
    built = subprocess.run(
        [go, "build", "-o", str(workdir / "peer"), "."],
        check=False,  # the assert below reports the compiler output
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, f"go build failed:\n{built.stderr}"
    yield workdir / "peer"
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
async def go_plugin(go_peer: Path) -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    socket_path = go_peer.parent / f"plugin-{os.getpid()}.sock"
    process = await asyncio.create_subprocess_exec(
        str(go_peer), "serve", str(socket_path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stderr is not None
        line = await asyncio.wait_for(process.stderr.readline(), timeout=30)
        assert line.strip() == b"listening", line
        yield f"unix://{socket_path}", process
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def recorded_requests(process: asyncio.subprocess.Process, count: int) -> list[dict[str, str]]:
    assert process.stdout is not None
    return [json.loads(await asyncio.wait_for(process.stdout.readline(), timeout=10)) for _ in range(count)]


async def test_our_client_against_a_go_plugin(
    go_plugin: tuple[str, asyncio.subprocess.Process], tmp_path: Path
) -> None:
    url, process = go_plugin
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    data = RetrievedPodData(
        pod=POD, containers=(RetrievedContainer(name="main", config_maps=({"metadata": {"name": "c"}},)),)
    )
    async with PluginClient(ClientConfig(endpoint=Endpoint.parse(url), token_file=token)) as client:
        ping = await client.ping()
        created = await client.create(data)
        (status,) = await client.status([POD])
        logs = await (await client.logs(LogStruct("team", UID, "job", "main", LogOpts(follow=True, tail=5)))).read_all()
        await client.delete(POD)
        with pytest.raises(PodNotFound):
            await client.delete({"metadata": {"uid": "unknown"}})
    assert ping is not None and ping.resources is not None and ping.resources.cpu == "64"
    assert ping.taints == ()
    assert (created.pod_uid, created.pod_jid) == (UID, "go-1")
    assert status.uid == UID and status.containers is not None
    assert status.containers[0].state.terminated is not None
    assert logs == b"".join(f"main line {i} tail=5 follow=true\n".encode() for i in range(3))

    seen = await recorded_requests(process, 6)
    assert [(r["method"], r["path"]) for r in seen] == [
        ("GET", "/status"), ("POST", "/create"), ("GET", "/status"),
        ("GET", "/getLogs"), ("POST", "/delete"), ("POST", "/delete"),
    ]
    assert seen[0]["body"] == "[]"
    assert json.loads(seen[2]["body"]) == [POD]  # Go's server read the body of a GET
    assert all(r["auth"] == "Bearer s3cret" and r["ctype"] == "application/json" for r in seen)
    assert [r["session"].split("#")[0] for r in seen] == [
        "Ping", "CreatePod", "GetStatus", "GetLogs", "DeletePod", "DeletePod",
    ]


async def test_a_go_caller_like_interlinks_api_against_our_server(go_peer: Path) -> None:
    backend = FakeBackend()
    socket_path = go_peer.parent / f"ours-{os.getpid()}.sock"
    async with FakePlugin(backend, f"unix://{socket_path}"):
        caller = await asyncio.create_subprocess_exec(
            str(go_peer), "call", str(socket_path),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(caller.communicate(), timeout=60)
    assert caller.returncode == 0, stderr.decode()
    steps = {entry["step"]: entry for entry in map(json.loads, stdout.decode().splitlines())}
    assert (steps["ping"]["code"], steps["ping"]["raw"]) == (200, "[]")
    assert steps["create"]["code"] == 200
    assert steps["create"]["value"]["PodUID"] == UID
    assert steps["status"]["code"] == 200
    (status,) = steps["status"]["value"]
    assert status["UID"] == UID and status["containers"][0]["name"] == "main"
    assert steps["logs"]["code"] == 200
    assert (steps["delete"]["code"], steps["delete-again"]["code"]) == (200, 404)
    assert [call.op for call in backend.calls] == ["ping", "create", "status", "logs", "delete", "delete"]
    assert backend.create_count(UID) == 1
