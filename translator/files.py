"""Atomic writes: a temp file (or folder) beside the target, then renamed over it.

A reader (or a crash) sees either the old complete file or the new complete file, never half.
Every file and folder the project writes for keeps goes through here.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Call `write(tmp_path)` to produce the file, then move it into place."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


@contextmanager
def atomic_folder(folder: Path, replace: bool = False) -> Iterator[Path]:
    """Yield a temp folder beside `folder` to fill; when the block ends without an error it
    becomes `folder`, else it is removed. An existing `folder` is replaced when `replace`, and
    otherwise kept (another process that made it first won: same content, by its name)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        yield tmp
        if replace and folder.exists():
            old = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.old."))
            folder.rename(old / folder.name)  # out of the way first: a rename cannot overwrite
            tmp.rename(folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                os.replace(tmp, folder)
            except OSError:
                if not folder.exists():
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
