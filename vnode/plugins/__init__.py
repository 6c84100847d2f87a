"""Backend plugins bundled with vnode. Each plugin imports only `plugin_client` and its own package,
so it installs and runs on a login node without the Kubernetes side of vnode."""
