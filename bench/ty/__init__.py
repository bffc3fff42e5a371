"""The taskyard half of the bench: its processes, a REST client, WebSocket clients and the workload."""
