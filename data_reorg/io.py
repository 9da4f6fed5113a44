"""Small file helpers shared by every stage: atomic writes, JSON lines, checksums, safe file names."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9_.-]")
_DISK_FULL = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}


class DiskFullError(OSError):
    """A write failed because the file system is full (ENOSPC) or the user's quota is used up (EDQUOT).

    ``filename`` is the final path being written, never the temporary one.
    """

    def __str__(self) -> str:
        return f"{_DISK_FULL.get(self.errno, 'no space left on device')} while writing {self.filename}"


def safe_name(item_id: str) -> str:
    """A file-name stem for ``item_id`` that cannot escape its folder.

    Real corpus ids (``Ses01F_impro01_F000``, ``-3g5yACwYnA_10``, ``_0efYOjQYRc_3``) are kept unchanged.
    Anything else (slashes, dots in front, spaces) is replaced and suffixed with a short hash of the
    original id so that two different ids never share a file.
    """
    name = _UNSAFE_CHARS.sub("_", item_id).lstrip(".")
    if name == item_id and name:
        return name
    digest = hashlib.sha1(item_id.encode("utf-8")).hexdigest()[:8]
    return f"{name or 'id'}-{digest}"


@contextlib.contextmanager
def atomic_path(final: Path | str, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it onto ``final`` only if the block succeeds.

    ``suffix`` keeps the real extension at the end of the temporary name, for writers that pick the
    container from it (OpenCV, soundfile).
    """
    tmp = temp_path_for(final, suffix)
    try:
        yield tmp
        os.replace(tmp, final)
    except Exception as error:
        code = _disk_full_errno(error, tmp.parent)
        if code is None:
            raise
        raise DiskFullError(code, os.strerror(code), str(final)) from error
    finally:
        if tmp.exists():
            tmp.unlink()


def _disk_full_errno(error: BaseException, folder: Path) -> int | None:
    """ENOSPC / EDQUOT when ``error`` (or an error it was raised from) says so, or when the writer hid
    the errno (soundfile, h5py, torch raise their own errors) but ``folder``'s file system has no free
    block left; None otherwise. Called before the temporary is removed, while it still fills the disk."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno in _DISK_FULL:
            return cause.errno
        cause = cause.__cause__ or cause.__context__
    try:
        return errno.ENOSPC if os.statvfs(folder).f_bavail == 0 else None
    except OSError:
        return None


def raise_if_disk_full(message: str, final: Path | str) -> None:
    """Raise DiskFullError for ``final`` if a tool's error ``message`` (ffmpeg's stderr) holds the
    system's text for ENOSPC or EDQUOT: a tool that writes files itself reports no errno."""
    for code in _DISK_FULL:
        if os.strerror(code) in message:
            raise DiskFullError(code, os.strerror(code), str(final))


def temp_path_for(final: Path | str, suffix: str | None = None) -> Path:
    """A hidden, per-process temporary name in ``final``'s folder (created if needed)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    ext = final.suffix if suffix is None else suffix
    return final.with_name(f".{final.stem}.tmp{os.getpid()}{ext}")


def remove_temporaries(folder: Path | str, names: Iterable[str] = ("*",)) -> None:
    """Delete the :func:`temp_path_for` files that killed writers of ``names`` (final file names or
    glob patterns; default: any) left in ``folder``, not in its sub-folders.

    Only for a folder that no other process is writing into at the time.
    """
    for name in names:
        for leftover in Path(folder).glob(f".{Path(name).stem}.tmp*"):
            leftover.unlink(missing_ok=True)


def write_text_atomic(path: Path | str, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_jsonl_atomic(path: Path | str, rows: Iterable[dict]) -> None:
    write_text_atomic(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def read_jsonl(path: Path | str) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def sha256_file(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_lines_lenient(path: Path | str) -> tuple[list[str], list[int]]:
    """The lines of a corpus text file, and the 1-based numbers of those that are not valid UTF-8.

    Each line is decoded on its own: UTF-8, or latin-1 (which never fails) for a line with bad bytes,
    so a few stray bytes garble only their own line. Lines end at LF, CRLF or CR only (never at a
    form feed or a latin-1 NEL byte, as ``str.splitlines`` would); a UTF-8 byte-order mark is dropped.
    """
    lines, fallbacks = [], []
    raw = Path(path).read_bytes().removeprefix(b"\xef\xbb\xbf")
    for number, chunk in enumerate(raw.splitlines(), start=1):
        try:
            lines.append(chunk.decode("utf-8"))
        except UnicodeDecodeError:
            lines.append(chunk.decode("latin-1"))
            fallbacks.append(number)
    return lines, fallbacks
