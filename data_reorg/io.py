"""Small file helpers shared by every stage: atomic writes, JSON lines, checksums, safe file names."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Iterable, Iterator

_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9_.-]")


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
    finally:
        if tmp.exists():
            tmp.unlink()


def temp_path_for(final: Path | str, suffix: str | None = None) -> Path:
    """A hidden, per-process temporary name in ``final``'s folder (created if needed)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    ext = final.suffix if suffix is None else suffix
    return final.with_name(f".{final.stem}.tmp{os.getpid()}{ext}")


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


def read_text_lenient(path: Path | str) -> str:
    """Corpus text files may hold non-UTF-8 bytes: decode as UTF-8, falling back to latin-1."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")
