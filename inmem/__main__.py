"""`python -m inmem` is the `inmem` command."""
import sys

from .cli import main

sys.exit(main())
