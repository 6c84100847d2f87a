"""The kubelet HTTPS endpoints: routing, authn/authz, logs, exec sessions, upgrades.

The agent plugs its pod cache, plugin client and apiserver adapter in through the Protocols
in :mod:`vnode.kubelet.backends`.
"""
