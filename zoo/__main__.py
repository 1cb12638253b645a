"""`python -m zoo ...` (and `accelerate launch -m zoo train ...`) runs the `zoo` command."""

import sys

from .cli import main

sys.exit(main())
