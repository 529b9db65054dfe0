"""``python -m reporter``: the same as the ``reporter`` command."""

import sys

from .cli import entry

# The guard matters: worker processes import the main module again.
if __name__ == "__main__":
    sys.exit(entry())
