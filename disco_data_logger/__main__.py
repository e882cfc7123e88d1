"""``python -m disco_data_logger``: the same as the ``disco-data-logger`` command."""

import sys

from .cli import main

sys.exit(main())
