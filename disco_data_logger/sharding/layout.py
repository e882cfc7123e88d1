"""The names of an experiment directory, defined once.

```
<output>/
  experiment.json        the experiment's summary (config snapshot, versions, totals)
  run.lock               held by the run in progress (sharding/lock.py)
  index/                 the merged index (streams, replications)
  shards/<shard_id>/     one logger directory per worker process, with its commit journal
```

A logger directory's own names (segments, ``_DONE``, ``streams/``) are in
:mod:`disco_data_logger.layout`.
"""

from __future__ import annotations

__all__ = ["EXPERIMENT_JSON", "INDEX_DIR", "JOURNAL_NAME", "LOCK_NAME", "MANIFEST_NAME",
           "SHARDS_DIR"]

SHARDS_DIR = "shards"
INDEX_DIR = "index"
EXPERIMENT_JSON = "experiment.json"
JOURNAL_NAME = "manifest.jsonl"
"""A shard's commit journal: the source of truth of what it committed."""
MANIFEST_NAME = "manifest.json"
LOCK_NAME = "run.lock"
