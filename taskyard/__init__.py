"""The process entry points: the `taskyard` command, the dev supervisor, the embedded Redis, migrations.

This package sits above the others: it imports `api` and `scheduler`, starts `worker` as a process,
and nothing imports it.
"""
