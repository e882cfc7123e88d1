"""``data_logger.collector``: :class:`Collector` with disco-data-logger 0.1.x's defaults.

0.1.x handed ``collect(rule=...)`` straight to disco-tools' label selector, so a rule there was a
``tools.label_selector.Rule`` or its raw specification, a dict with the one key ``all``, ``any``,
``not`` or ``match``. Both keep that meaning here; every other rule form of
:mod:`disco_data_logger.selector` (mappings of labels, selector strings, callables) works too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from disco_data_logger.collector import BatchWriter
from disco_data_logger.collector import Collector as _Collector
from disco_data_logger.layout import DONE_MARKER

__all__ = ["DEFAULT_BATCH_SIZE", "DONE_MARKER", "Collector"]

DEFAULT_BATCH_SIZE = 2048
"""0.1.x's number of rows per record batch written by ``collect``."""

_SPEC_KEYS = frozenset({"all", "any", "not", "match"})


def _as_rule(rule: Any) -> Any:
    """A raw disco-tools rule specification as a ``Rule``; anything else unchanged."""
    if isinstance(rule, Mapping) and len(rule) == 1 and next(iter(rule)) in _SPEC_KEYS:
        from tools.label_selector import Rule

        return Rule(dict(rule))
    return rule


class Collector(_Collector):
    """:class:`disco_data_logger.Collector` with 0.1.x's batch size and rule specifications."""

    def __init__(self, paths: Sequence[str | Path] | str | Path, *,
                 batch_rows: int = DEFAULT_BATCH_SIZE) -> None:
        super().__init__(paths, batch_rows=batch_rows)

    def collect(self, writer: BatchWriter, rule: Any = None,
                columns: Sequence[str] | None = None, backoff: int = 100,
                timeout: int | None = 60_000) -> bool:
        """Write the selected streams' records to ``writer`` (see the base class)."""
        return super().collect(writer, _as_rule(rule), columns, backoff, timeout)
