"""Writing output folders so that nothing a user would miss is lost and nothing is left half-written."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import OutputExistsError, UserInputError


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` that replaces it only if the block completes, so readers never see half
    a file; on any error the temporary file is removed."""
    path = Path(path)
    staging = path.with_name(f".{path.name}.partial")
    try:
        yield staging
        os.replace(staging, path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_directory(output_dir: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a staging folder beside `output_dir` that replaces it only if the block completes.

    A non-empty `output_dir` is refused unless `overwrite` is set; on any error the staging folder is removed and
    `output_dir` is left as it was.
    """
    output_dir = Path(output_dir)
    if output_dir.is_file():
        raise UserInputError(f"{output_dir} is a file; choose a folder path for the output.")
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise OutputExistsError(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.partial-", dir=output_dir.parent))
    try:
        yield staging
        if output_dir.exists():
            # Move the old folder aside first so that a crash between the two renames loses nothing.
            retired = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.old-", dir=output_dir.parent))
            output_dir.rename(retired / output_dir.name)
            staging.rename(output_dir)
            shutil.rmtree(retired)
        else:
            staging.rename(output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
