"""`taskyard login | tasks ... | agents list`: a client of a running server, over its REST API and /ws only.

Nothing here imports server internals (only `protocol`), so it behaves exactly like any other client.
"""

from taskyard.client.commands import client_commands

__all__ = ("client_commands",)
