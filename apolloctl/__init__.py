"""Developer and operator CLI, including the local control plane used by tests and the demo."""
