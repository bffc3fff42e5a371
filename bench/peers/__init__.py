"""Peer task queues run on the same no-op workloads: dramatiq, taskiq, celery, rq.

`*_app.py`, `adapters.py`, `actions_*.py` and `client.py` run inside `bench/.venv-peers` (their pins
may clash with ours); the driver side (`venv.py`, `driver.py`) runs in the project's venv.
"""
