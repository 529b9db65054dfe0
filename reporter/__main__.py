"""``python -m reporter``: the same as the ``reporter`` command."""

import sys

from .cli import main

sys.exit(main())
