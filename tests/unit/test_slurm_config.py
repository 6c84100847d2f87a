"""SlurmConfig.yaml: every Go key accepted, env overrides, defaults, errors naming the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vnode.plugins.slurm.config import ConfigError, load_config, parse_config

GO_SAMPLE = """
SidecarPort: "4000"
SbatchPath: "/usr/bin/sbatch"
ScancelPath: "/usr/bin/scancel"
SqueuePath: "/usr/bin/squeue"
SinfoPath: "/usr/bin/sinfo"
CommandPrefix: "module load apptainer"
ImagePrefix: "docker://"
ExportPodData: true
DataRootFolder: "/tmp/il/.local/interlink/jobs/"
Namespace: "vk"
Tsocks: false
TsocksPath: "$WORK/tsocks-1.8beta5+ds1/libtsocks.so"
TsocksLoginNode: "login01"
BashPath: /bin/bash
VerboseLogging: true
ErrorsOnlyLogging: false
SingularityPrefix: ""
SingularityPath: "apptainer"
SingularityDefaultOptions: ["--nv", "--no-eval", "--containall"]
EnrootDefaultOptions: ["--rw"]
EnrootPrefix: ""
EnrootPath: enroot
ContainerRuntime: singularity
EnableProbes: false
VKConfigPath: /etc/interlink/InterLinkConfig.yaml
Flavors:
  gpu-a100:
    Description: A100 nodes
    CPUDefault: 8
    MemoryDefault: 64G
    UID: 1001
    SlurmFlags: ["--gres=gpu:a100:1", "-p gpu"]
DefaultFlavor: gpu-a100
DefaultUID: 1000
Taints:
  - Key: hpc
    Value: slurm
    Effect: NoSchedule
ResourceScriptPath: ""
"""


def test_go_plugin_sample_config_loads_with_every_key() -> None:
    config, warnings = parse_config(GO_SAMPLE, {})
    assert warnings == []
    assert config.sidecar_port == 4000
    assert config.sbatch == ("/usr/bin/sbatch",)
    assert config.squeue == ("/usr/bin/squeue",)
    assert config.command_prefix == "module load apptainer"
    assert config.singularity_path == "apptainer"
    assert config.data_root == Path("/tmp/il/.local/interlink/jobs")
    assert config.verbose_logging is True
    flavor = config.flavors["gpu-a100"]
    assert (flavor.cpu_default, flavor.memory_default_bytes, flavor.uid) == (8, 64 * 2**30, 1001)
    assert flavor.slurm_flags == ("--gres=gpu:a100:1", "-p gpu")
    assert config.default_flavor == "gpu-a100" and config.default_uid == 1000
    assert config.taints is not None and config.taints[0].key == "hpc"


def test_empty_config_gets_documented_defaults() -> None:
    config, _ = parse_config("", {})
    assert config.sbatch == ("sbatch",) and config.scancel == ("scancel",) and config.sacct == ("sacct",)
    assert config.bash_path == "/bin/bash"
    assert config.data_root == Path("~/.local/interlink/jobs").expanduser()
    assert config.sidecar_port == 4000 and config.socket_path is None
    assert config.singularity_default_options == ("--nv", "--no-eval", "--containall")
    assert config.default_memory_bytes == 2**30 and config.default_cpu_millis == 1000
    assert config.container_runtime == "singularity"
    assert config.shared_fs is False


def test_sbatch_path_may_be_a_command_prefix_split_once() -> None:
    config, _ = parse_config("SbatchPath: ssh -o 'BatchMode yes' login sbatch\n", {})
    assert config.sbatch == ("ssh", "-o", "BatchMode yes", "login", "sbatch")


def test_environment_overrides_the_file() -> None:
    env = {"SIDECARPORT": "4100", "SBATCHPATH": "/opt/slurm/bin/sbatch", "SCANCELPATH": "/x/scancel",
           "SINFOPATH": "/x/sinfo", "SINGULARITYPATH": "/x/apptainer", "SHARED_FS": "true", "SQUEUEPATH": "/x/squeue"}
    config, _ = parse_config("SidecarPort: 4000\nSbatchPath: sbatch\n", env)
    assert config.sidecar_port == 4100
    assert config.sbatch == ("/opt/slurm/bin/sbatch",)
    assert config.scancel == ("/x/scancel",) and config.sinfo == ("/x/sinfo",) and config.squeue == ("/x/squeue",)
    assert config.singularity_path == "/x/apptainer"
    assert config.shared_fs is True


def test_socket_wins_over_the_port() -> None:
    config, _ = parse_config("Socket: unix:///run/plugin.sock\nSidecarPort: 4000\n", {})
    assert config.socket_path == "/run/plugin.sock" and config.sidecar_port is None


def test_explicit_empty_singularity_options_mean_none() -> None:
    config, _ = parse_config("SingularityDefaultOptions: []\n", {})
    assert config.singularity_default_options == ()


def test_unknown_keys_are_warnings_not_errors() -> None:
    _, warnings = parse_config("GangSchedulingEnabled: false\n", {})
    assert warnings == ["unknown key 'GangSchedulingEnabled' ignored"]


@pytest.mark.parametrize(
    ("text", "env", "key"),
    [
        ("SidecarPort: banana\n", {}, "SidecarPort"),
        ("SidecarPort: 70000\n", {}, "SidecarPort"),
        ("", {"SIDECARPORT": "x"}, "SIDECARPORT"),
        ("Socket: /run/x.sock\n", {}, "Socket"),
        ("ContainerRuntime: docker\n", {}, "ContainerRuntime"),
        ("ExportPodData: yes please\n", {}, "ExportPodData"),
        ("BashPath: bash\n", {}, "BashPath"),
        ("SbatchPath: \"'unclosed\"\n", {}, "SbatchPath"),
        ("", {"TSOCKS": "maybe"}, "TSOCKS"),
        ("", {"SHARED_FS": "yes"}, "SHARED_FS"),
        ("", {"TSOCKSPATH": "/does/not/exist.so"}, "TSOCKSPATH"),
        ("Tsocks: true\n", {}, "Tsocks"),
        ("SingularityDefaultOptions: --nv\n", {}, "SingularityDefaultOptions"),
        ("DataRootFolder: /data/a:b\n", {}, "DataRootFolder"),
        ("DataRootFolder: /data/100%\n", {}, "DataRootFolder"),
        ("DefaultMemory: lots\n", {}, "DefaultMemory"),
        ("DefaultCPU: 0\n", {}, "DefaultCPU"),
        ("LogPollSeconds: 5\n", {}, "LogPollSeconds"),
        ("StatusCacheSeconds: -1\n", {}, "StatusCacheSeconds"),
        ("DefaultUID: -3\n", {}, "DefaultUID"),
        ("DefaultFlavor: nope\n", {}, "DefaultFlavor"),
        ("Flavors:\n  f:\n    CPUDefault: -1\n", {}, "Flavors.f.CPUDefault"),
        ("Flavors:\n  f:\n    MemoryDefault: huge\n", {}, "Flavors.f.MemoryDefault"),
        ("Flavors:\n  f:\n    SlurmFlags: [partition=gpu]\n", {}, "Flavors.f.SlurmFlags[0]"),
        ("Flavors:\n  f:\n    Cpus: 2\n", {}, "Flavors.f.Cpus"),
        ("Taints:\n  - Key: a\n    Effect: Sometimes\n", {}, "Taints[0].Effect"),
        ("Flavors: [a]\n", {}, "Flavors"),
    ],
)
def test_bad_values_name_the_key(text: str, env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, env)
    assert info.value.key == key
    assert str(info.value).startswith(f"{key}: ")


def test_yaml_syntax_errors_are_reported_with_the_line() -> None:
    with pytest.raises(ConfigError, match=r"line 2"):
        parse_config("SidecarPort: 4000\nSbatchPath: a: b\n", {})


def test_top_level_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError, match="mapping"):
        parse_config("- a\n- b\n", {})


def test_config_path_comes_from_slurmconfigpath(tmp_path: Path) -> None:
    path = tmp_path / "SlurmConfig.yaml"
    path.write_text("SidecarPort: 4321\n")
    config, _ = load_config(None, {"SLURMCONFIGPATH": str(path)})
    assert config.sidecar_port == 4321


def test_missing_config_file_names_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml", {})


def test_cli_exits_2_naming_the_key_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("ContainerRuntime: docker\n")
    proc = subprocess.run([sys.executable, "-m", "vnode.plugins.slurm.cli", "--config", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "ContainerRuntime" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_accepts_the_go_flag_spelling(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("SidecarPort: nope\n")
    proc = subprocess.run([sys.executable, "-m", "vnode.plugins.slurm.cli", "-SlurmConfigpath", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and "SidecarPort" in proc.stderr
