"""Side jobs on rq: retention purges, task counts for `/metrics` (and later deliveries), run by `taskyard jobs`.

Nothing on the agent path goes through rq; see docs/architecture.md for why.
"""
