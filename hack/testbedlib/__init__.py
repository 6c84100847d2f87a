"""The vnode testbed: a real Kubernetes control plane and a real SLURM cluster on this machine.

Test infrastructure only. `hack/testbed` is the entry point; nothing in the vnode package imports this.
"""
