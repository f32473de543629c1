"""`python -m tangshi` runs the command line."""

import sys

from tangshi.cli import main

if __name__ == "__main__":
    sys.exit(main())
