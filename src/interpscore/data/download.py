"""Download the IMI release (Zenodo record 8131197), resumable, with md5 verification.

A download goes to `<name>.part`; an interrupted one resumes from there with an HTTP Range request.
Only a file whose md5 matches is renamed to its final name.
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import InputError

ZENODO_RECORD = "https://zenodo.org/records/8131197/files"
IMI_FILES = {
    "human_responses.zip": "f886fc48a87baf51f2beb834924c8b62",
    "image_data.zip": "47c364fd92752d3412f1c08f8cd6d793",
}
CHUNK = 1 << 20


class DownloadError(InputError):
    pass


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def download_file(url: str, target: Path, md5: str | None, timeout: float = 30.0,
                  progress: bool = True) -> Path:
    """Fetch URL into TARGET (resuming TARGET.part), verify md5, rename. Returns TARGET."""
    from tqdm.auto import tqdm

    target = Path(target)
    if target.exists() and (md5 is None or md5_of(target) == md5):
        return target
    part = target.with_name(target.name + ".part")
    target.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # the part file is already complete
            response = None
        else:
            raise DownloadError(f"{url}: HTTP {err.code} {err.reason} (partial data kept in "
                                f"{part})") from err
    except (urllib.error.URLError, OSError) as err:
        raise DownloadError(f"{url}: host unreachable ({getattr(err, 'reason', err)}); "
                            f"rerun to resume from {part}") from err
    if response is not None:
        with response:
            resumed = response.status == 206
            mode = "ab" if resumed else "wb"  # a server that ignores Range sends it all again
            total = response.headers.get("Content-Length")
            total = int(total) + (have if resumed else 0) if total else None
            bar = tqdm(total=total, initial=have if resumed else 0, unit="B", unit_scale=True,
                       desc=target.name, disable=not progress)
            try:
                with open(part, mode) as handle, bar:
                    for block in iter(lambda: response.read(CHUNK), b""):
                        handle.write(block)
                        bar.update(len(block))
            except (OSError, urllib.error.URLError) as err:
                raise DownloadError(f"{url}: connection lost ({err}); rerun to resume from "
                                    f"{part}") from err
            if total is not None and part.stat().st_size < total:
                raise DownloadError(f"{url}: connection closed after {part.stat().st_size} of "
                                    f"{total} bytes; rerun to resume from {part}")
    if md5 is not None:
        got = md5_of(part)
        if got != md5:
            part.unlink()
            raise DownloadError(f"{target}: md5 mismatch (expected {md5}, got {got}); the "
                                "corrupt download was removed, rerun to fetch it again")
    part.replace(target)
    return target


def download_imi(out: str | Path, files: list[str] | None = None,
                 base_url: str = ZENODO_RECORD, progress: bool = True) -> list[Path]:
    """Download the IMI zips (all by default) into OUT; returns their paths."""
    files = files or list(IMI_FILES)
    unknown = [f for f in files if f not in IMI_FILES]
    if unknown:
        raise InputError(f"--files {' '.join(unknown)}: unknown IMI file(s); valid: "
                         f"{', '.join(IMI_FILES)}")
    return [download_file(f"{base_url.rstrip('/')}/{name}?download=1", Path(out) / name,
                          IMI_FILES[name], progress=progress) for name in files]
