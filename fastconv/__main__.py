"""``python -m fastconv``: the same command line as the ``fastconv`` console script."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
