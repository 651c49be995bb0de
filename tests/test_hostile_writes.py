"""Files the system refuses to write (a full disk, the file-size limit, a read-only or immutable folder): one line
naming the path and the cause, exit 2, the old output kept; every command through the one boundary (run_command)."""

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from convnext_hf.atomic import atomic_directory, atomic_file, write_refusal
from convnext_hf.cli import run_command
from helpers import FIXTURES


def _fail_inside(output: Path, error: BaseException, directory: bool = True):
    def command(argv):
        with (atomic_directory(output, overwrite=True) if directory else atomic_file(output)) as staging:
            if directory:
                (staging / "part.bin").write_bytes(b"new")
            raise error

    return command


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (OSError(errno.ENOSPC, "No space left on device", "/x/model.safetensors"),
         "cannot write /x/model.safetensors: No space left on device (the disk is full"),
        (OSError(errno.EROFS, "Read-only file system", "/x/a"), "cannot write /x/a: Read-only file system"),
        (OSError(errno.EPERM, "Operation not permitted", "/x/a"), "cannot open /x/a: Operation not permitted (the "
         "operation is not permitted (an immutable"),
        (RuntimeError("Error while serializing: I/O error: File too large (os error 27)"), "File too large (the file "
         "would pass the file-size limit"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("directory", [True, False])
def test_refused_write_is_one_line_and_the_old_output_stays(tmp_path, capsys, error, expected, directory):
    output = tmp_path / ("out" if directory else "out.json")
    if directory:
        output.mkdir()
        (output / "old.txt").write_text("old")
    else:
        output.write_text("old")
    status = run_command("convnext-hf test", _fail_inside(output, error, directory), [])
    assert status == 2
    message = capsys.readouterr().err
    assert message.count("\n") == 1 and message.startswith("convnext-hf test: error: ")
    assert expected in message
    assert (output / "old.txt" if directory else output).read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == [output.name], "no staging debris"


def test_staging_path_is_named_by_its_place_in_the_output(tmp_path):
    staged = tmp_path / ".out.partial-123-abcd0123" / "model.safetensors"
    refusal = write_refusal(OSError(errno.ENOSPC, "No space left on device", str(staged)))
    assert str(refusal).startswith(f"cannot write {tmp_path / 'out' / 'model.safetensors'}: No space left")


def test_other_errors_keep_their_traceback():
    assert write_refusal(OSError(errno.ENOENT, "No such file", "/x")) is None
    assert write_refusal(RuntimeError("shape mismatch")) is None
    with pytest.raises(ZeroDivisionError):
        run_command("convnext-hf test", lambda argv: 1 / 0, [])


@pytest.mark.slow
def test_convert_under_the_file_size_limit_says_so_and_writes_nothing(tmp_path):
    script = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (20000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))\n"
        "from convnext_hf.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    output = tmp_path / "converted"
    result = subprocess.run(
        [sys.executable, "-c", script, "convert", "--checkpoint", str(FIXTURES / "mini.timm.safetensors"),
         "--output_dir", str(output)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith(f"convnext-hf convert: error: cannot write {output}/")
    assert "File too large (the file would pass the file-size limit (ulimit -f)" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert os.listdir(tmp_path) == []
