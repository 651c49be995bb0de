"""The converter's entry point in a checkout: `python conversion/convert.py ARGS` runs `convnext-hf convert ARGS`.

The converter itself lives in the installed package (`convnext_hf.conversion`); install the package first
(README.md, "Two commands").
"""

import sys

from convnext_hf.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", *sys.argv[1:]]))
