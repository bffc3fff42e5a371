"""The Redis side of taskyard: key layout, Lua scripts, the `SchedulerClient` the API uses, and
the scheduler process (`python -m scheduler`). Talks to Redis only, never to the database.

Import what you need from the submodules (`scheduler.client`, `scheduler.types`, ...); this
package module imports nothing, so importing a submodule stays cheap.
"""

__all__: tuple[str, ...] = ()
