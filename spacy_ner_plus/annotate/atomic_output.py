"""Outputs that appear whole or not at all.

Every command that writes a pipeline, a page or a report builds it in a hidden
temporary sibling of the output (same folder, so same file system) and
renames it into place at the end: an error or a kill in the middle leaves the
previous output untouched and no half-written one.

A directory that already exists cannot be replaced by one rename, so it takes
two: the old one is renamed aside (``.NAME.old-*``), the new one renamed in,
then the old one deleted. A crash between the two renames leaves both
complete copies beside OUTPUT, never a partial one and never none.
"""
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Union

PathLike = Union[str, Path]


def _sibling(path: Path, tag: str) -> Path:
    # A fresh name each time: two runs writing to one output never share a temporary.
    return path.parent / f".{path.name}.{tag}-{uuid.uuid4().hex[:12]}"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def replace_directory(new: PathLike, path: PathLike) -> None:
    """Move the complete directory ``new`` to ``path``, replacing what is there.

    new (PathLike): the finished directory, on the file system of ``path``.
    path (PathLike): the output; an existing one is renamed aside, then deleted
        once ``new`` is in place (put back if the rename of ``new`` fails).
    """
    new, path = Path(new), Path(path)
    if not os.path.lexists(path):
        os.rename(new, path)
        return
    aside = _sibling(path, "old")
    os.rename(path, aside)
    try:
        os.rename(new, path)
    except BaseException:
        os.rename(aside, path)
        raise
    _remove(aside)


@contextmanager
def atomic_directory(path: PathLike) -> Iterator[Path]:
    """Yield an empty directory beside ``path`` to write into; when the block
    ends without an error it replaces ``path`` (``replace_directory``), else it
    is deleted and ``path`` is left as it was. Parent folders are created.

    path (PathLike): the output directory.
    YIELDS (Path): the temporary directory.
    """
    path = Path(os.path.abspath(path))  # "out/." names the folder "out", not "."
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, "tmp")
    os.mkdir(tmp)  # os.mkdir honours the umask (mkdtemp would make it 0700)
    try:
        yield tmp
        replace_directory(tmp, path)
    finally:
        if os.path.lexists(tmp):
            _remove(tmp)


@contextmanager
def atomic_file(path: PathLike) -> Iterator[Path]:
    """Yield an empty file beside ``path`` to write; when the block ends without
    an error it replaces ``path`` (one ``os.replace``), else it is deleted.
    Parent folders are created.

    path (PathLike): the output file.
    YIELDS (Path): the temporary file.
    """
    path = Path(os.path.abspath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, "tmp")
    # O_EXCL: never write through a file or link someone else put there; 0o666 & ~umask
    # is the mode an ordinary open() gives (mkstemp would make it 0600)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_files_into(directory: PathLike) -> Iterator[Path]:
    """Yield an empty directory beside ``directory``; when the block ends without
    an error, each file written there replaces its namesake in ``directory``
    (created if needed) with one ``os.replace``, and the other files of
    ``directory`` stay: a report folder may hold a user's other files, so it is
    not replaced whole the way a pipeline directory is.

    directory (PathLike): the output folder.
    YIELDS (Path): the temporary directory (write files, not folders, into it).
    """
    directory = Path(os.path.abspath(directory))
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(directory, "tmp")
    os.mkdir(tmp)
    try:
        yield tmp
        directory.mkdir(parents=True, exist_ok=True)
        for item in sorted(tmp.iterdir()):
            os.replace(item, directory / item.name)
    finally:
        if os.path.lexists(tmp):
            _remove(tmp)
