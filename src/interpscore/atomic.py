"""Outputs appear whole or not at all: a file or folder is built beside its destination and
renamed into place. Every writer of the package goes through here."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import InputError


@contextmanager
def atomic_folder(out: str | Path, overwrite: bool = False):
    """Yield a temporary folder beside OUT. If the block succeeds it replaces OUT (an existing
    OUT only with `overwrite`); if it fails, the temporary folder is removed and OUT is untouched."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise InputError(f"{out}: already exists (pass --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def check_output_folder(out: str | Path, overwrite: bool, option: str = "--out") -> None:
    """Before any work: OUT must be absent, an empty folder, or (with `overwrite`) a folder whose
    files of the same names may be replaced; never a file."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{option} {out}: is a file, not a folder; name a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError(f"{option} {out}: already holds files; pass --overwrite to replace the "
                         "files this command writes (others are kept), or name another folder")


@contextmanager
def files_into(out: str | Path):
    """Yield a temporary folder beside OUT; if the block succeeds, each file in it replaces the
    file of the same name in OUT (renames), and nothing else in OUT is touched."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        for path in sorted(tmp.iterdir()):
            os.replace(path, out / path.name)
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
