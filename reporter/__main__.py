"""``python -m reporter``: the same as the ``reporter`` command."""

import sys

from .cli import entry

# The guard matters where workers are spawned afresh (no fork server): each imports
# the main module again.
if __name__ == "__main__":
    sys.exit(entry())
