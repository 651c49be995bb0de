"""The `convnext-hf` command: `convnext-hf train ...` fine-tunes or trains a ConvNeXt, `convnext-hf demo` shows it."""

from __future__ import annotations

import sys
from collections.abc import Sequence

USAGE = """usage: convnext-hf <command> [options]

commands:
  train   train or fine-tune a ConvNeXt on your images (every transformers Trainer flag works);
          `convnext-hf train --help` lists the options
  demo    train a small ConvNeXt on MNIST digits from scratch, offline, and score held-out digits
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to a subcommand; return the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "train":
        from .train import main as train_main

        train_main(rest)
        return 0
    if command == "demo":
        from .demo import main as demo_main

        demo_main(rest)
        return 0
    print(f"convnext-hf: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
