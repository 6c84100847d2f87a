"""The node agent core: node and lease controllers, the pod controller and its pure decisions."""
