"""Downloading checkpoints from their official URLs into a cache, checking them against known SHA-256 digests.

The digest comes from the zoo (`sha256`), else from the file name where the release carries a prefix of it
(OpenMMLab names files `...-<first 8 hex digits of the sha256>.pth`). A file with neither has its digest recorded in
the cache's `checksums.json` on first download, and every later use is checked against that record.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from tqdm.auto import tqdm

from ..errors import UserInputError

CHUNK = 1 << 20
RECORD_FILE = "checksums.json"
HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z]+$")


class DownloadError(UserInputError, ConnectionError):
    """The checkpoint could not be downloaded (no network, or the URL is gone)."""


class ChecksumError(UserInputError):
    """A downloaded or cached file is not the one the release published."""


# Downloads go to this folder under $XDG_CACHE_HOME (~/.cache when unset); --help and docs/conversion.md name it.
CACHE_SUBFOLDER = "convnext_hf/checkpoints"
CACHE_DIR_HELP = f"download cache (default $XDG_CACHE_HOME/{CACHE_SUBFOLDER}, ~/.cache/{CACHE_SUBFOLDER} when unset)"


def default_cache_dir() -> Path:
    """Where downloads go unless --cache_dir says otherwise."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / CACHE_SUBFOLDER


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def expected_digest(url: str, sha256: str | None = None) -> str | None:
    """The full digest from the zoo, else the prefix in the released file name, else None."""
    if sha256:
        return sha256.lower()
    match = HASH_IN_NAME.search(urlparse(url).path)
    return match.group(1) if match else None


def _records(cache_dir: Path) -> dict[str, str]:
    record_file = cache_dir / RECORD_FILE
    return json.loads(record_file.read_text()) if record_file.is_file() else {}


def _record(cache_dir: Path, url: str, digest: str) -> None:
    records = _records(cache_dir)
    records[url] = digest
    staging = cache_dir / f".{RECORD_FILE}.partial"
    staging.write_text(json.dumps(records, indent=1, sort_keys=True) + "\n")
    staging.replace(cache_dir / RECORD_FILE)


def _download(url: str, destination: Path) -> None:
    handle_number, staging_name = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".partial",
                                                   dir=destination.parent)
    os.close(handle_number)
    staging = Path(staging_name)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(staging, "wb") as handle:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=destination.name, leave=False) as progress:
                while chunk := response.read(CHUNK):
                    handle.write(chunk)
                    progress.update(len(chunk))
        staging.replace(destination)
    except (urllib.error.URLError, OSError) as error:
        raise DownloadError(
            f"Could not download {url} ({error}). Without network, download it elsewhere and pass the file with "
            "--checkpoint PATH (with --model NAME to keep the zoo metadata)."
        ) from None
    finally:
        staging.unlink(missing_ok=True)


def fetch(url: str, cache_dir: Path, sha256: str | None = None) -> tuple[Path, str]:
    """Local path and SHA-256 of the file at `url`, downloaded once into `cache_dir` and verified on every use."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserInputError(f"--cache_dir {cache_dir} is a file (or lies under one); pass a folder.") from None
    path = cache_dir / Path(urlparse(url).path).name
    if not path.is_file():
        _download(url, path)
    digest = sha256_of(path)
    expected = expected_digest(url, sha256) or _records(cache_dir).get(url)
    if expected is None:
        _record(cache_dir, url, digest)
    elif not digest.startswith(expected):
        rejected = path.with_name(path.name + ".rejected")
        shutil.move(path, rejected)
        raise ChecksumError(
            f"{path.name} has SHA-256 {digest}, but {url} was published as {expected}...: the file is corrupt or not "
            f"the official one. It was moved to {rejected}; run again to download a fresh copy, or check the URL."
        )
    return path, digest
