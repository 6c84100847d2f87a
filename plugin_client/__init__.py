"""interLink's plugin wire API: typed models and an async client, shared by the agent and the plugins."""
