"""The benchmark suite: `inmem bench` / `python -m inmem.bench`, tiers side by side with peers.

Never imported by the library and never timed under pytest; see
`bench/__main__.py` for the command and `bench/context.py` for the row format.
"""
