"""`python -m convnext_hf.train ...` (and `accelerate launch -m convnext_hf.train ...`), the same as
`convnext-hf train ...`: bad input is one line on stderr and exit status 2."""

import sys

from ..cli import run_command
from . import main

sys.exit(run_command("convnext-hf train", main, sys.argv[1:]))
