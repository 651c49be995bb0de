"""Hostile cases for outputs (issue 15, part 2): a second writer, a user's file, a crash mid-overwrite, a killed run.

Each must end with the first result or the user's files intact, a clear refusal for the loser, and no hidden
`.NAME.partial-*` / `.NAME.old-*` debris (or debris the next run removes and reports). The in-process rows replay the
interleavings deterministically; the slow rows race real processes and send real signals.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from convnext_hf import atomic
from convnext_hf.atomic import atomic_directory, atomic_file
from convnext_hf.errors import OutputExistsError, UserInputError

SRC = Path(__file__).parents[1] / "src"
DEAD_TOKEN = "999999999-0badf00d"  # a writer that no longer exists: nobody holds the lock of its debris


def tree(folder: Path) -> dict[str, str]:
    """Relative path -> text of every file under `folder`; hidden siblings are listed by `entries`."""
    return {str(path.relative_to(folder)): path.read_text() for path in sorted(folder.rglob("*")) if path.is_file()}


def entries(parent: Path) -> list[str]:
    return sorted(os.listdir(parent))


def write_folder(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def _second_writer_wins_first(out: Path) -> None:
    with pytest.raises(OutputExistsError, match="another run or program wrote to it"):
        with atomic_directory(out) as first:
            (first / "model.txt").write_text("first")
            with atomic_directory(out) as second:
                (second / "model.txt").write_text("second")
    assert tree(out) == {"model.txt": "second"}


def _file_appears_in_missing_output(out: Path) -> None:
    with pytest.raises(OutputExistsError, match=str(out)):
        with atomic_directory(out) as staging:
            (staging / "model.txt").write_text("new")
            write_folder(out, {"notes.txt": "mine"})
    assert tree(out) == {"notes.txt": "mine"}


def _file_appears_in_empty_output(out: Path) -> None:
    out.mkdir()
    with pytest.raises(OutputExistsError):
        with atomic_directory(out) as staging:
            (staging / "model.txt").write_text("new")
            (out / "notes.txt").write_text("mine")
    assert tree(out) == {"notes.txt": "mine"}


def _file_appears_during_overwrite(out: Path) -> None:
    write_folder(out, {"model.txt": "old"})
    with pytest.raises(OutputExistsError, match="notes.txt changed in it while this run was writing"):
        with atomic_directory(out, overwrite=True) as staging:
            (staging / "model.txt").write_text("new")
            (out / "notes.txt").write_text("mine")
    assert tree(out) == {"model.txt": "old", "notes.txt": "mine"}


def _file_edited_during_overwrite(out: Path) -> None:
    write_folder(out, {"model.txt": "old"})
    with pytest.raises(OutputExistsError, match="model.txt changed"):
        with atomic_directory(out, overwrite=True) as staging:
            (staging / "model.txt").write_text("new")
            (out / "model.txt").write_text("edited by the user, longer")
    assert tree(out) == {"model.txt": "edited by the user, longer"}


def _two_overwrites_race(out: Path) -> None:
    write_folder(out, {"model.txt": "old"})
    with pytest.raises(OutputExistsError, match="changed in it while this run was writing"):
        with atomic_directory(out, overwrite=True) as first:
            (first / "model.txt").write_text("first")
            with atomic_directory(out, overwrite=True) as second:
                (second / "model.txt").write_text("second")
    assert tree(out) == {"model.txt": "second"}


def _error_during_overwrite_keeps_old(out: Path) -> None:
    write_folder(out, {"model.txt": "old"})
    with pytest.raises(RuntimeError):
        with atomic_directory(out, overwrite=True) as staging:
            (staging / "model.txt").write_text("half")
            raise RuntimeError("interrupted")
    assert tree(out) == {"model.txt": "old"}


def _crash_between_the_renames(out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_folder(out, {"model.txt": "old"})

    def fail(source: Path, target: Path) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(atomic, "_rename_no_replace", fail)
    with pytest.raises(OSError, match="Input/output"):
        with atomic_directory(out, overwrite=True) as staging:
            (staging / "model.txt").write_text("new")
    assert tree(out) == {"model.txt": "old"}


def _overwrite_replaces(out: Path) -> None:
    write_folder(out, {"model.txt": "old", "stale.txt": "old"})
    with atomic_directory(out, overwrite=True) as staging:
        (staging / "model.txt").write_text("new")
    assert tree(out) == {"model.txt": "new"}


def _output_is_a_file(out: Path) -> None:
    out.write_text("mine")
    with pytest.raises(UserInputError, match="is a file"):
        with atomic_directory(out):
            pass
    assert out.read_text() == "mine"


def _parent_is_a_file(out: Path) -> None:
    out.parent.joinpath("file").write_text("mine")
    with pytest.raises(UserInputError, match="cannot write"):
        with atomic_directory(out.parent / "file" / "out"):
            pass


def _symlink_to_folder(out: Path) -> None:
    real = write_folder(out.parent / "real", {"model.txt": "old"})
    out.symlink_to(real, target_is_directory=True)
    with pytest.raises(OutputExistsError, match="real"):
        with atomic_directory(out):
            pass
    with atomic_directory(out, overwrite=True) as staging:
        (staging / "model.txt").write_text("new")
    assert out.is_symlink() and tree(real) == {"model.txt": "new"}


CASES = {
    "second writer to the same output wins first, the first is refused": _second_writer_wins_first,
    "a file appears in an output that did not exist": _file_appears_in_missing_output,
    "a file appears in an output that was empty": _file_appears_in_empty_output,
    "a file appears in the old output during --overwrite": _file_appears_during_overwrite,
    "a file of the old output is edited during --overwrite": _file_edited_during_overwrite,
    "two --overwrite runs race": _two_overwrites_race,
    "an error during --overwrite keeps the old output": _error_during_overwrite_keeps_old,
    "--overwrite replaces the old output": _overwrite_replaces,
    "the output is a file": _output_is_a_file,
    "the output's parent is a file": _parent_is_a_file,
    "the output is a symlink to a folder": _symlink_to_folder,
}


@pytest.mark.parametrize("case", CASES)
def test_outputs_are_never_lost(tmp_path, case):
    CASES[case](tmp_path / "out")
    assert not [name for name in entries(tmp_path) if name.startswith(".")], entries(tmp_path)


def test_failure_between_the_renames_puts_the_old_output_back(tmp_path, monkeypatch):
    _crash_between_the_renames(tmp_path / "out", monkeypatch)
    assert entries(tmp_path) == ["out"]


def _debris(out: Path, kind: str, files: dict[str, str], token: str = DEAD_TOKEN) -> Path:
    return write_folder(out.with_name(f".{out.name}.{kind}-{token}"), files)


# name -> (what a dead writer left: kind -> files, the output's files or None, the output afterwards, logged)
RECOVERY = {
    "half-written staging folder": ({"partial": {"model.txt": "half"}}, None, None, "left half-written"),
    "killed between the renames of --overwrite": (
        {"old": {"model.txt": "old"}, "partial": {"model.txt": "new"}}, None, {"model.txt": "old"}, "Restored",
    ),
    "killed while deleting the replaced output": (
        {"old": {"model.txt": "old"}}, {"model.txt": "new"}, {"model.txt": "new"}, "had already replaced",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", RECOVERY)
def test_next_run_cleans_what_a_dead_writer_left_and_says_so(tmp_path, case, caplog):
    left, output_files, expected, logged = RECOVERY[case]
    out = tmp_path / "out"
    for kind, files in left.items():
        _debris(out, kind, files)
    if output_files is not None:
        write_folder(out, output_files)
    with caplog.at_level(logging.WARNING, logger="convnext_hf.atomic"):
        atomic.recover(out)
    assert logged in caplog.text and str(out) in caplog.text
    assert entries(tmp_path) == ([] if expected is None else ["out"])
    if expected is not None:
        assert tree(out) == expected


def test_old_output_is_kept_when_its_place_was_taken(tmp_path, caplog):
    out = write_folder(tmp_path / "out", {"model.txt": "someone else's"})
    _debris(out, "old", {"model.txt": "old"})
    _debris(out, "partial", {"model.txt": "new"})
    with caplog.at_level(logging.WARNING, logger="convnext_hf.atomic"):
        atomic.recover(out)
    assert "move back what you need" in caplog.text
    assert tree(out) == {"model.txt": "someone else's"}
    # Moved to a visible name, so that no later run takes it for debris.
    assert entries(tmp_path) == ["out", f"out.previous-{DEAD_TOKEN}"]
    assert tree(tmp_path / f"out.previous-{DEAD_TOKEN}") == {"model.txt": "old"}
    atomic.recover(out)
    assert entries(tmp_path) == ["out", f"out.previous-{DEAD_TOKEN}"]


def test_debris_of_a_live_writer_is_left_alone(tmp_path):
    out = tmp_path / "out"
    with atomic_directory(out) as staging:
        (staging / "model.txt").write_text("new")
        atomic.recover(out)
        assert staging.is_dir() and tree(staging) == {"model.txt": "new"}
    assert tree(out) == {"model.txt": "new"} and entries(tmp_path) == ["out"]


def test_atomic_file_staging_is_private_and_cleaned(tmp_path):
    path = tmp_path / "metrics.json"
    _debris(path, "partial", {}).rmdir()
    path.with_name(f".metrics.json.partial-{DEAD_TOKEN}").write_text("half")
    with atomic_file(path) as first, atomic_file(path) as second:
        assert first != second
        first.write_text("first")
        second.write_text("second")
    assert path.read_text() == "first" and entries(tmp_path) == ["metrics.json"]


# The slow part: real processes racing and real signals. Each writer runs WRITER with the output, a mode and a
# folder for its "ready" marker; it waits for the go file before leaving the block.
WRITER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from convnext_hf import atomic
    from convnext_hf.cli import run_command

    out, mode, sync = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])

    def main(argv):
        if mode == "crash-between-renames":
            atomic._rename_no_replace = lambda source, target: os.kill(os.getpid(), 9)
        with atomic.atomic_directory(out, overwrite=mode != "new") as staging:
            (staging / "model.txt").write_text(str(os.getpid()))
            (sync / f"ready-{os.getpid()}").touch()
            while not (sync / "go").exists():
                time.sleep(0.01)
        return 0

    sys.exit(run_command("writer", main, []))
    """
)


def start_writer(out: Path, mode: str, sync: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.Popen([sys.executable, "-c", WRITER, str(out), mode, str(sync)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def wait_ready(sync: Path, count: int) -> None:
    deadline = time.monotonic() + 120
    while len(list(sync.glob("ready-*"))) < count:
        assert time.monotonic() < deadline, "writers never got ready"
        time.sleep(0.02)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["new", "overwrite"])
def test_two_processes_race_for_one_output(tmp_path, mode):
    out, sync = tmp_path / "out", tmp_path / "sync"
    sync.mkdir()
    if mode == "overwrite":
        write_folder(out, {"model.txt": "old"})
    writers = [start_writer(out, mode, sync) for _ in range(2)]
    wait_ready(sync, 2)
    (sync / "go").touch()
    results = [(writer.wait(120), writer.communicate()) for writer in writers]
    statuses = sorted(status for status, _ in results)
    assert statuses == [0, 2], results
    winner = next(writer for writer, (status, _) in zip(writers, results, strict=True) if status == 0)
    loser_stderr = next(err for status, (_, err) in results if status == 2)
    assert loser_stderr.count("\n") == 1 and "Traceback" not in loser_stderr and str(out) in loser_stderr
    assert tree(out) == {"model.txt": str(winner.pid)}
    assert entries(tmp_path) == ["out", "sync"]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["new", "overwrite"])
def test_sigterm_leaves_nothing_behind(tmp_path, mode):
    out, sync = tmp_path / "out", tmp_path / "sync"
    sync.mkdir()
    if mode == "overwrite":
        write_folder(out, {"model.txt": "old"})
    writer = start_writer(out, mode, sync)
    wait_ready(sync, 1)
    writer.send_signal(signal.SIGTERM)
    assert writer.wait(60) == 128 + signal.SIGTERM
    assert entries(tmp_path) == (["out", "sync"] if mode == "overwrite" else ["sync"])
    if mode == "overwrite":
        assert tree(out) == {"model.txt": "old"}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["overwrite", "crash-between-renames"])
def test_after_sigkill_the_next_run_cleans_up(tmp_path, mode, caplog):
    out, sync = tmp_path / "out", tmp_path / "sync"
    sync.mkdir()
    write_folder(out, {"model.txt": "old"})
    writer = start_writer(out, mode, sync)
    wait_ready(sync, 1)
    if mode == "overwrite":
        writer.kill()
    else:
        (sync / "go").touch()
    assert writer.wait(60) == -signal.SIGKILL
    debris = [name for name in entries(tmp_path) if name.startswith(".out.")]
    assert debris, "the killed writer left nothing to clean up"
    with caplog.at_level(logging.WARNING, logger="convnext_hf.atomic"):
        with atomic_directory(out, overwrite=True) as staging:
            (staging / "model.txt").write_text("next")
    assert ("left half-written" if mode == "overwrite" else "Restored") in caplog.text
    assert tree(out) == {"model.txt": "next"}
    assert entries(tmp_path) == ["out", "sync"]


# --- runs that write their folder in place (train, demo): a second run into it at the same time is refused ----------


@pytest.mark.parametrize(
    "command",
    [
        ["train", "--train_dir", "{images}", "--variant", "atto", "--report_to", "none", "--output_dir", "{out}"],
        ["demo", "--output_dir", "{out}"],
    ],
    ids=["train", "demo"],
)
def test_a_run_into_a_folder_another_run_is_writing_is_refused_and_leaves_it_alone(tmp_path, capsys, command):
    import fcntl

    from convnext_hf.cli import main as cli_main

    out = tmp_path / "out"
    out.mkdir()
    (out / "theirs.txt").write_text("being written")
    argv = [part.format(images=tmp_path / "images", out=out) for part in command] + ["--overwrite"]
    holder = os.open(out, os.O_RDONLY)  # what the other run holds while it writes
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        status = cli_main(argv)
    finally:
        os.close(holder)
    err = capsys.readouterr().err
    assert status == 2 and f"--output_dir {out} is being written by another run right now" in err, err
    assert sorted(os.listdir(out)) == ["theirs.txt"] and (out / "theirs.txt").read_text() == "being written"
    assert sorted(os.listdir(tmp_path)) == ["out"]
