"""The bundled SLURM plugin: runs each pod as one SLURM batch job, drop-in compatible with
interlink-hq/interlink-slurm-plugin (config file, annotations, wire API, on-disk layout).

Module map (one concept each):
  config       SlurmConfig.yaml + env overrides → SlurmConfig
  quantity     Kubernetes resource quantities (cpu, memory)
  podspec      the typed view of the pod fields the plugin reads
  directives   #SBATCH lines: annotation flags, flavors, computed resources
  volumes      pod volumes → files to write + binds
  shell        the one quoting helper
  runtime      singularity / enroot argv for one container
  script       job.slurm + job.sh, pure
  slurm_cli    the only module that spawns SLURM commands
  parsers      sbatch / squeue / sacct / sinfo output
  states       SLURM job states → container states
  store        pod directories: layout, recovery, per-pod locks
  status       PodStatus from job state + per-container files
  poller       batched, cached squeue/sacct queries
  logs         /getLogs: tail, bytes, since, timestamps, follow
  exec         exec into a running pod through srun
  service      the plugin backend (create, delete, status, logs, ping, exec)
  cli          `vnode-slurm-plugin`
"""
