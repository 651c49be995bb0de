"""`python -m convnext_hf.train ...`, the same as `convnext-hf train ...`."""

import sys

from . import main

status = main()
sys.exit(status if isinstance(status, int) else 0)
