"""Peer task queues run on the same no-op workload: dramatiq and taskiq.

`*_app.py` and `*_run.py` run inside `bench/.venv-peers` (their pins may clash with ours); the
driver side (`venv.py`, `runner.py`) runs in the project's venv.
"""
