"""The taskyard side of the bench: its processes, REST and WebSocket clients, client processes."""
