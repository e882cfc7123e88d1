"""``data_logger.periodic``: :class:`PeriodicStream`, as in disco-data-logger 0.1.x.

The class is :class:`disco_data_logger.PeriodicStream`; it takes ``graphblas.Vector`` (what 0.1.x
took), ``sparse_array.Vector`` and one-row ``scipy.sparse`` vectors in ``record_vector``.
"""

from disco_data_logger.periodic import PeriodicStream

__all__ = ["PeriodicStream"]
