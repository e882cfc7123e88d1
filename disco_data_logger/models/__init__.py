"""Example simulation models that ship with the package.

Each model is a module with a ``run(ctx)`` function (see
:class:`~disco_data_logger.sharding.context.RunContext`), named in a config as
``entry_point: disco_data_logger.models.<module>:run``. They are real enough to show the logger at
work on sparse state and accumulators, and small enough to run a demo in seconds.
"""

from __future__ import annotations

ENTRY_POINTS = {
    "inventory": "disco_data_logger.models.inventory:run",
    "mm1": "disco_data_logger.models.mm1:run",
}
"""Short names of the built-in models and their entry points."""
