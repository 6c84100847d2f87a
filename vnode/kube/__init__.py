"""The apiserver adapter: the only code in vnode that talks to Kubernetes."""
