"""Reliability tests (issue 5): repair of torn segments, resource faults, reader fuzzing,
hostile input, concurrency and load. Long modes run with ``--runslow``; see docs/reliability.md."""
