"""``data_logger``: the import name of disco-data-logger 0.1.x, kept for its users.

Code written for 0.1.x (``from data_logger import DataLogger``) runs unchanged on this release:
this package exposes what 0.1.x exposed, with 0.1.x's signatures and defaults, backed by
:mod:`disco_data_logger`. New code should import :mod:`disco_data_logger`, which has the whole API
(``read``, ``Experiment``, the service, the exceptions). README.md, "Upgrading from 0.1.x", lists
what is kept and what changed.
"""

from disco_data_logger._version import __version__

from .collector import Collector
from .main import DataLogger
from .periodic import PeriodicStream

__all__ = ["Collector", "DataLogger", "PeriodicStream", "__version__"]
