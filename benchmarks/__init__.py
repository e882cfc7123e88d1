"""Benchmarks of disco-data-logger against its anchors (pyarrow's Parquet and IPC files, and the
0.1.5 seed), with the targets docs/performance.md lists under "Targets".

Run ``python -m benchmarks --help``. Importing this package installs nothing and imports nothing
heavier than the standard library; each contender runs in its own subprocess
(``benchmarks/worker/run.py``), ours in the current interpreter's environment, the 0.1.5 seed in
the anchors venv made by ``--setup-anchors``.
"""
