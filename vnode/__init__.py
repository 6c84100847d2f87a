"""vnode: a virtual kubelet that runs Kubernetes pods on HPC systems."""

__version__ = "0.1.0"
