"""The kubelet HTTPS endpoints: routing, authn/authz, logs, exec sessions, upgrades.

The composition root calls :func:`vnode.kubelet.endpoint.start_kubelet_endpoint`; it wires the
front (:mod:`.server`) to the agent's pod cache and plugin client (:mod:`.plugin_backends`,
through the Protocols in :mod:`.backends`) and keeps the serving certificate fresh
(:mod:`.cert_manager`). See README.md in this directory.
"""
