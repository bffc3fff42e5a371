"""Benchmarks of taskyard against peer task queues (`python -m bench`); not part of the test run.

Modules imported by the peer scripts (`bench.stats`, `bench.procs`) use the standard library only,
because they also run inside the separate peers' virtualenv.
"""
