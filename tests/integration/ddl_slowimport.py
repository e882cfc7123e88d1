"""A test model whose module takes seconds to import (a heavy simulation package would): a worker
is not ready to run a replication before it has imported its model."""

from __future__ import annotations

import time

from ddl_testmodels import steady

IMPORT_SECONDS = 2.5
time.sleep(IMPORT_SECONDS)

run = steady
