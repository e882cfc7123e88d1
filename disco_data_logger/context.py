"""Compatibility alias: the run context lives in :mod:`disco_data_logger.sharding.context`, the
experiment service's wing. Import from there in new code; these names stay importable from here.
"""

from .sharding.context import *  # noqa: F403
from .sharding.context import __all__ as __all__  # noqa: F401
