"""`python -m convnext_hf.train ...`, the same as `convnext-hf train ...`."""

from . import main

main()
