"""Compatibility alias: the experiment configuration lives in
:mod:`disco_data_logger.sharding.config` (and task planning in
:mod:`disco_data_logger.sharding.planning`), the experiment service's wing. Import from there in new
code; these names stay importable from here.
"""

from .sharding.config import *  # noqa: F403
from .sharding.config import __all__ as _config_all
from .sharding.planning import *  # noqa: F403
from .sharding.planning import __all__ as _planning_all

__all__ = [*_config_all, *_planning_all]
