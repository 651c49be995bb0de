"""What `convnext-hf convert` can be asked for, light to import so that `--help` loads neither torch nor
transformers: the output formats and the default verification tolerance."""

from __future__ import annotations

CONVNEXT_HF = "convnext_hf"
TRANSFORMERS = "transformers"
TARGETS = (CONVNEXT_HF, TRANSFORMERS)
DEFAULT_TOLERANCE = 1e-4
