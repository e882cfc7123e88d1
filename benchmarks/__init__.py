"""Benchmarks of disco-data-logger against its anchors (SPEC section 8).

Run ``python -m benchmarks --help``. Importing this package installs nothing and imports nothing
heavier than the standard library; each contender runs in its own subprocess
(``benchmarks/worker/run.py``), ours in the current interpreter's environment, the 0.1.5 seed in
the anchors venv made by ``--setup-anchors``.
"""
