"""``python -m ssd300_client``: the ``ssd300-detect`` command."""

import sys

from .cli import main

sys.exit(main())
