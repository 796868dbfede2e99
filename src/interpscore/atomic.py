"""Outputs appear whole or not at all: a file or folder is built beside its destination and
renamed into place. Every writer of the package goes through here."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import InputError


def check_output_folder(out: str | Path, overwrite: bool, option: str = "--out",
                        resumable: tuple[str, ...] = ()) -> None:
    """Before any work: OUT must be absent, an empty folder, a folder holding only the
    `resumable` entries (a cache a rerun continues from), or, with `overwrite`, a folder whose
    entries of the names the command writes may be replaced; never a file; and writable."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{option} {out}: is a file, not a folder; name a folder")
    held = {p.name for p in out.iterdir()} if out.is_dir() else set()
    if held - set(resumable) and not overwrite:
        raise InputError(f"{option} {out}: already holds files; pass --overwrite to replace the "
                         "files this command writes (others are kept), or name another folder")
    for folder in {_nearest_existing(out), _nearest_existing(out.parent)}:
        _check_writable(folder, option, out)


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def _check_writable(folder: Path, option: str, out: Path) -> None:
    """Try it (permission bits say nothing for root or a read-only file system)."""
    if not folder.is_dir():
        raise InputError(f"{option} {out}: {folder} is a file, so no folder can be made there")
    try:
        handle, name = tempfile.mkstemp(prefix=".interpscore-write-test.", dir=folder)
    except OSError as err:
        raise InputError(f"{option} {out}: {folder} is not writable ({err.strerror}); "
                         "choose a folder you can write to") from err
    os.close(handle)
    os.unlink(name)


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_folder(out: str | Path, overwrite: bool = False, option: str = "--out"):
    """Yield a temporary folder beside OUT. If the block succeeds, each entry in it replaces the
    entry of the same name in OUT (renames; other entries of OUT are kept, and an existing
    non-empty OUT needs `overwrite`); if it fails, the temporary folder is removed and OUT is
    untouched."""
    check_output_folder(out, overwrite, option)
    with files_into(out) as tmp:
        yield tmp


def _replace(new: Path, old: Path) -> None:
    """Move NEW to OLD's name; a folder of that name is moved aside first, then removed."""
    if old.is_dir() and not old.is_symlink():
        aside = old.with_name(f".{old.name}.old-{os.getpid()}")
        old.rename(aside)
        new.rename(old)
        shutil.rmtree(aside)
    else:
        os.replace(new, old)


@contextmanager
def files_into(out: str | Path):
    """Yield a temporary folder beside OUT; if the block succeeds, each entry in it replaces the
    entry of the same name in OUT, and nothing else in OUT is touched (the caller has checked OUT
    with `check_output_folder`)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        if not out.exists():  # a new OUT appears whole, in one rename
            tmp.rename(out)
            return
        for entry in sorted(tmp.iterdir()):
            _replace(entry, out / entry.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def atomic_file(path: str | Path):
    """Yield a temporary sibling path of PATH; if the block succeeds it replaces PATH, otherwise
    it is removed and PATH is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    tmp = Path(name)
    os.chmod(tmp, 0o666 & ~_UMASK)  # as a plain open() would make it, not mkstemp's 0600
    try:
        yield tmp
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    """Write a text file atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(text)
    return Path(path)
