"""Writing outputs so that nothing a user would miss is lost, nothing is silently replaced and nothing is left
half-written.

A run writes into a staging path beside its output, `.NAME.partial-PID-TOKEN`, and moves it into place in one
rename. For a folder that rename is also the existence check: `os.rename` onto a folder that is not empty fails,
so of two writers racing for the same output the second is refused instead of replacing the first, and a file that
appears in the output during the run makes the run refuse rather than delete it. `--overwrite` moves the old output
aside to `.NAME.old-PID-TOKEN`, checks that it still holds only what it held when the run started, moves the new one
in and only then deletes the old one; a failure in between moves the old one back.

Every staging and set-aside path is locked (`flock`) by its writer for as long as it exists; the kernel drops the
lock when the process dies, however it dies. The next run over the same output takes the locks of any such debris it
finds: what a dead writer left is cleaned up, or, for an old output that never got its replacement, restored, and
each step is logged. SIGTERM during a write is turned into an exception, so a terminated run cleans up at once.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import secrets
import shutil
import signal
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from .errors import OutputExistsError, UserInputError

try:
    import fcntl
    import resource
except ImportError:  # Windows: no flock; debris is then never taken for dead and is left for the user
    fcntl = resource = None

logger = logging.getLogger(__name__)

PARTIAL = "partial"
OLD = "old"


def _debris_name(output: Path, kind: str, token: str) -> Path:
    """`.NAME.KIND-TOKEN` beside `output`; TOKEN is `PID-RANDOM`, the pid only to name the writer in messages."""
    return output.with_name(f".{output.name}.{kind}-{token}")


def _new_token() -> str:
    return f"{os.getpid()}-{secrets.token_hex(4)}"


def _lock(path: Path, blocking: bool = False) -> int | None:
    """An open descriptor of `path` holding its exclusive flock, or None if another live process holds it, the path
    is gone, or there is no flock (then no one else's path is ever taken for abandoned)."""
    if fcntl is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except OSError:
        os.close(fd)
        return None
    return fd


# Folders this process writes in place (a training run's or a demo's --output_dir), with the descriptor holding
# their flock.
_CLAIMED: dict[Path, int] = {}
# The folder this process claimed last, released or not: where a failed write of a run's own files went.
_CLAIMED_EVER: list[Path] = []


def claim_output_dir(output_dir: str | os.PathLike) -> None:
    """Hold an exclusive flock on `output_dir` (made if missing) until `release_output_dir`: a second run writing
    into the same folder at the same time is refused, rather than mixing its files with this one's or replacing them."""
    output = _resolved(output_dir)
    if output in _CLAIMED or fcntl is None:
        return
    output.mkdir(parents=True, exist_ok=True)
    fd = _lock(output)
    if fd is None:
        raise UserInputError(
            f"--output_dir {output_dir} is being written by another run right now; wait for it to finish, or choose "
            "another folder."
        )
    _CLAIMED[output] = fd
    _CLAIMED_EVER[:] = [output]


def first_missing(path: str | os.PathLike) -> str | None:
    """The outermost folder of `path` that does not exist yet (None when `path` exists): what creating it creates."""
    path = os.path.abspath(path)
    missing = None
    while not os.path.lexists(path):
        missing, parent = path, os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return missing


def claims_output_dir(output_dir: str | os.PathLike) -> bool:
    """Whether this process holds `output_dir` (`claim_output_dir`)."""
    return _resolved(output_dir) in _CLAIMED


def release_output_dir(output_dir: str | os.PathLike) -> None:
    """Let other runs write into `output_dir` again."""
    fd = _CLAIMED.pop(_resolved(output_dir), None)
    if fd is not None:
        os.close(fd)


def _remove(path: Path) -> None:
    """Delete a file or folder tree (a folder's symlinks are removed, never followed)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _create_locked(output: Path, directory: bool) -> tuple[Path, int | None]:
    """Create a new staging file or folder for `output` and lock it, so that a later run can tell it from the debris
    of a dead writer. A concurrent `recover` may take the lock first and delete the new path: then start over."""
    while True:
        staging = _debris_name(output, PARTIAL, _new_token())
        if directory:
            staging.mkdir()
        else:
            os.close(os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        lock = _lock(staging, blocking=True)
        if lock is None and fcntl is None:
            return staging, None
        if lock is not None:
            with suppress(FileNotFoundError):
                if os.path.samestat(os.fstat(lock), os.stat(staging)):
                    return staging, lock
            os.close(lock)


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


def recover(output: str | os.PathLike) -> None:
    """Clean up what dead writers left beside `output`; restore an old output that never got its replacement.

    Only debris whose lock can be taken is touched: its writer is dead. Each step is logged as a warning.
    """
    output = Path(output)
    prefix = f".{output.name}."
    try:
        names = sorted(os.listdir(output.parent))
    except OSError:
        return
    # Set-aside old outputs first: whether one is restored depends on its partial sibling still being there.
    candidates = [name for name in names if name.startswith(prefix + OLD + "-")]
    candidates += [name for name in names if name.startswith(prefix + PARTIAL + "-")]
    for name in candidates:
        path = output.parent / name
        fd = _lock(path)
        if fd is None:
            continue
        try:
            kind, token = name[len(prefix):].split("-", 1)
            if kind == PARTIAL:
                _remove(path)
                logger.warning("Removed %s, left half-written by an interrupted run writing %s (process %s).",
                               path, output, token.split("-")[0])  # fmt: skip
            else:
                _recover_old(output, path, token)
        finally:
            os.close(fd)


def _recover_old(output: Path, old: Path, token: str) -> None:
    """An old output set aside by a run that died: delete it if its replacement is in place, else move it back."""
    replaced = not _debris_name(output, PARTIAL, token).exists() and output.exists()
    if replaced:
        # The staging folder is gone and the output is there: the rename into place happened, only the
        # deletion of the old output did not finish.
        _remove(old)
        logger.warning("Removed %s, the previous %s that an interrupted --overwrite run had already replaced.",
                       old, output)  # fmt: skip
        return
    if _is_empty_dir(output):
        output.rmdir()
    if _restore(old, output, token):
        logger.warning("Restored %s from %s, where an interrupted --overwrite run had set it aside.", output, old)


def _listing(folder: Path) -> dict[str, tuple[int, int, int]]:
    """Every entry under `folder` (symlinks not followed) with its type, size and modification time."""
    entries = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(root, name)
            status = os.lstat(path)
            entries[os.path.relpath(path, folder)] = (stat.S_IFMT(status.st_mode), status.st_size, status.st_mtime_ns)
    return entries


@contextmanager
def _exception_on_sigterm() -> Iterator[None]:
    """Within the block, SIGTERM raises SystemExit(143) instead of killing the process, so that `finally` clauses
    clean up; only where SIGTERM has its default action and in the main thread (where Python runs handlers)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


# What the system says when it refuses a write, and what the user can do about it.
WRITE_ERRORS = {
    errno.ENOSPC: "the disk is full; free space or choose another folder",
    errno.EDQUOT: "the disk quota is used up; free space or choose another folder",
    errno.EFBIG: "the file would pass the file-size limit (ulimit -f); raise it or choose another folder",
    errno.EROFS: "the file system is read-only; choose a folder you can write to",
    errno.EACCES: "permission denied; choose paths you can read and write",
    errno.EPERM: "the operation is not permitted (an immutable or append-only folder?); choose another folder",
}
# Of these, the refusals that only a write meets (the others may also refuse reading an input).
_WRITE_ONLY_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)
# Errors of writers that report the system's refusal in their own words: safetensors (Rust's "os error N") and
# torch.save (its zip writer's, without the cause).
_OS_ERROR_NUMBER = re.compile(r"\(os error (\d+)\)")
_SEP = re.escape(os.sep)
_STAGED = re.compile(rf"(^|{_SEP})\.([^{_SEP}]+)\.{PARTIAL}-\d+-[0-9a-f]+(?={_SEP}|$)")
_TORCH_WRITE_FAILURE = re.compile(r"inline_container|PytorchStreamWriter|iostream error|file write failed")


def _failed_write(error: BaseException, folder: Path | None) -> tuple[int, str | None] | None:
    """The errno of the system's refusal behind `error` (or one in its chain) and the path it names (a copy's
    destination), None when it is not one."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in WRITE_ERRORS:
            return error.errno, error.filename2 or error.filename
        number = _OS_ERROR_NUMBER.search(str(error))
        if number and int(number.group(1)) in WRITE_ERRORS:
            return int(number.group(1)), None
        if isinstance(error, RuntimeError) and _TORCH_WRITE_FAILURE.search(str(error)):
            # torch does not say why: the file-size limit or a full disk are the causes it cannot write past.
            if resource is not None and resource.getrlimit(resource.RLIMIT_FSIZE)[0] != resource.RLIM_INFINITY:
                return errno.EFBIG, None
            if folder is not None and os.statvfs(folder).f_bavail == 0:
                return errno.ENOSPC, None
        error = error.__cause__ or error.__context__
    return None


def write_refusal(error: BaseException) -> UserInputError | None:
    """The one-line refusal, naming the path and the cause, of a write the system refused (a full disk, the file-size
    limit, a read-only, immutable or forbidden folder) anywhere in a command; None when `error` is not one. Outputs are
    staged (`atomic_file`, `atomic_directory`), so such a failure leaves the old output as it was."""
    output = getattr(error, "output_path", None) or next(iter(_CLAIMED_EVER), None)
    folder = next((path for path in (output, *getattr(output, "parents", ())) if path and path.is_dir()), None)
    found = _failed_write(error, folder)
    if found is None:
        return None
    number, path = found
    if path is not None:  # a file inside a staging folder is named by its place in the output
        path = _STAGED.sub(r"\1\2", os.fsdecode(path))
    verb = "write" if number in _WRITE_ONLY_ERRORS else "open"
    return UserInputError(f"cannot {verb} {path or output or 'the output'}: {os.strerror(number)} "
                          f"({WRITE_ERRORS[number]}); no output was replaced.")  # fmt: skip


def _remember_output(error: BaseException, output: Path) -> None:
    """Note on `error` the output being written when it happened, for `write_refusal`'s message."""
    if getattr(error, "output_path", None) is None:
        with suppress(AttributeError, TypeError):
            error.output_path = output


def _unwritable(output: Path, error: OSError) -> UserInputError:
    """The refusal of an output whose folder cannot be created or written."""
    return UserInputError(f"cannot write {output}: {error.strerror or error} ({error.filename}); choose a folder you "
                          "can write to.")  # fmt: skip


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` that replaces it only if the block completes, so readers never see half
    a file; on any error the temporary file is removed."""
    path = Path(path)
    recover(path)
    staging, lock = _create_locked(path, directory=False)
    try:
        with _exception_on_sigterm():
            try:
                yield staging
                os.replace(staging, path)
            except BaseException as error:
                staging.unlink(missing_ok=True)
                _remember_output(error, path)
                raise
    finally:
        if lock is not None:
            os.close(lock)


def _resolved(output_dir: str | os.PathLike) -> Path:
    """The output path, a symlink to a folder replaced by the folder it points to (the link stays)."""
    output = Path(output_dir)
    return Path(os.path.realpath(output)) if output.is_symlink() and output.is_dir() else output


def check_output_dir(output_dir: str | os.PathLike, overwrite: bool = False) -> None:
    """Refuse, before any work and creating nothing, an output `atomic_directory` would refuse at its start: a file,
    a path under a file, a folder that cannot be written, or a non-empty folder without `overwrite`."""
    output = _resolved(output_dir)
    if output.exists() and not output.is_dir():
        raise UserInputError(f"{output} is a file; choose a folder path for the output.")
    existing = next(parent for parent in output.absolute().parents if parent.exists())
    if not existing.is_dir():
        raise UserInputError(f"cannot write {output}: {existing} is a file; choose a folder you can write to.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserInputError(f"cannot write {output}: {existing} is not writable; choose a folder you can write to.")
    if not overwrite and output.is_dir() and any(output.iterdir()):
        raise OutputExistsError(output)


def check_apart(output_dir: str | os.PathLike, inputs: dict[str, str | os.PathLike | None]) -> None:
    """Refuse an output folder that is one of the inputs (flag -> path), or holds one, or lies inside one: replacing
    it would delete the input (with --overwrite), and outputs inside a data folder would be read as data next time.
    Paths are compared resolved, so a link is seen for what it points to."""
    output = Path(os.path.realpath(output_dir))
    for flag, given in inputs.items():
        if not given or not os.path.exists(given):
            continue
        source = Path(os.path.realpath(given))
        if output == source or output in source.parents:
            raise UserInputError(
                f"--output_dir {output_dir} holds {flag} {given}; writing there would replace it. Choose another "
                "output folder."
            )
        if source in output.parents:
            raise UserInputError(
                f"--output_dir {output_dir} lies inside {flag} {given}; the results would mix with that input (and be "
                "read as part of it next time). Choose a folder outside it."
            )


@contextmanager
def atomic_directory(output_dir: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a staging folder beside `output_dir` that takes its place only if the block completes.

    A non-empty `output_dir` is refused unless `overwrite` is set, both here and at the move into place (a second
    writer that got there first wins; the later one is refused). With `overwrite`, the old folder is replaced only
    if nothing in it changed during the run. On any error the staging folder is removed and `output_dir` is left as
    it was.
    """
    output = _resolved(output_dir)
    check_output_dir(output, overwrite=True)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _unwritable(output, error) from error
    recover(output)
    before = None
    if output.is_dir() and any(output.iterdir()):
        if not overwrite:
            raise OutputExistsError(output)
        before = _listing(output)
    try:
        staging, lock = _create_locked(output, directory=True)
    except OSError as error:
        raise _unwritable(output, error) from error
    token = staging.name.split(f".{PARTIAL}-", 1)[1]
    try:
        with _exception_on_sigterm():
            try:
                yield staging
                _move_into_place(staging, output, before, token)
            except BaseException as error:
                _remember_output(error, output)
                raise
            finally:
                with suppress(FileNotFoundError):
                    shutil.rmtree(staging)
    finally:
        if lock is not None:
            os.close(lock)


def _move_into_place(staging: Path, output: Path, before: dict | None, token: str) -> None:
    """Rename the finished staging folder to `output`; with `before` (the old output's listing at the start) set,
    replace the old output if it is unchanged."""
    if before is None:
        _rename_no_replace(staging, output)
        return
    old_lock = _lock(output)
    if old_lock is None:
        if output.exists():
            raise UserInputError(f"{output} is being written by another run; wait for it to finish or choose "
                                 "another output folder.")  # fmt: skip
        _rename_no_replace(staging, output)
        return
    old = _debris_name(output, OLD, token)
    try:
        os.rename(output, old)
        try:
            after = _listing(old)
            changed = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
            if changed:
                raise OutputExistsError(
                    output,
                    f"{', '.join(changed[:3])}{' ...' if len(changed) > 3 else ''} changed in it while this run was "
                    "writing, so it was kept as it is and nothing was written: run again to replace it",
                )
            _rename_no_replace(staging, output)
        except BaseException:
            _restore(old, output, token)
            raise
    finally:
        os.close(old_lock)
    _remove(old)


def _restore(old: Path, output: Path, token: str) -> bool:
    """Move the set-aside old output back. If something took its place meanwhile, move it to the visible
    `NAME.previous-TOKEN` instead (never cleaned up automatically) and say so; False then."""
    try:
        os.rename(old, output)
        return True
    except OSError:
        kept = output.with_name(f"{output.name}.previous-{token}")
        os.rename(old, kept)
        logger.warning("%s was taken by another run or program while %s was being replaced; its previous content "
                       "is kept in %s: move back what you need, then delete it.", output, output, kept)  # fmt: skip
        return False


def _rename_no_replace(source: Path, output: Path) -> None:
    """Rename the folder `source` to `output` unless `output` holds anything (an empty folder is replaced)."""
    try:
        os.rename(source, output)
    except OSError as error:
        if error.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
            raise OutputExistsError(
                output, "another run or program wrote to it while this run was writing, so this run's result was "
                "discarded: pass --overwrite to replace it"
            ) from error
        raise
