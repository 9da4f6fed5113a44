import errno
import os
import pickle

import pytest

from data_reorg.io import DiskFullError, atomic_path, read_jsonl, read_lines_lenient, safe_name, write_jsonl_atomic


@pytest.mark.parametrize("item", ["Ses01F_impro01_F000", "-3g5yACwYnA_10", "_0efYOjQYRc_3", "81406_0", "PtH_8O__EAY_2"])
def test_real_ids_are_kept_as_file_names(item):
    assert safe_name(item) == item


@pytest.mark.parametrize("item", ["../../etc/passwd", "a/b", ".hidden", "..", "", "x y"])
def test_unsafe_ids_cannot_escape(tmp_path, item):
    name = safe_name(item)
    assert "/" not in name and not name.startswith(".") and name
    assert (tmp_path / f"{name}.mp4").resolve().parent == tmp_path.resolve()


def test_unsafe_ids_do_not_collide():
    assert safe_name("a/b") != safe_name("a_b") != safe_name("a b")


def test_atomic_path_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "manifest.jsonl"
    write_jsonl_atomic(target, [{"id": "a"}])
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("killed")
    assert read_jsonl(target) == [{"id": "a"}]
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.jsonl"]


def test_lenient_lines_read_latin1(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes("caf\xe9: ok".encode("latin-1"))
    assert read_lines_lenient(path) == (["café: ok"], [1])


def test_lenient_lines_decode_each_line_on_its_own(tmp_path):
    """One bad byte garbles only its own line: the UTF-8 lines around it stay right."""
    path = tmp_path / "t.txt"
    path.write_bytes("naïve — ok\r\n".encode() + b"caf\xe9 latin-1\n" + "日本語\n\nlast".encode())
    lines, fallbacks = read_lines_lenient(path)
    assert lines == ["naïve — ok", "café latin-1", "日本語", "", "last"]
    assert fallbacks == [2]


def test_lenient_lines_break_only_at_newlines(tmp_path):
    """A latin-1 byte 0x85 (NEL) or a form feed is text, not a line break, so line numbers stay right."""
    path = tmp_path / "t.txt"
    path.write_bytes(b"a\x85b\nc\x0cd\n")
    assert read_lines_lenient(path) == (["a\x85b", "c\x0cd"], [1])


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_atomic_path_reports_a_full_disk_naming_the_file(tmp_path, code):
    target = tmp_path / "manifest.jsonl"
    write_jsonl_atomic(target, [{"id": "a"}])
    with pytest.raises(DiskFullError, match=f"while writing {target}$") as caught:
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise OSError(code, os.strerror(code))
    assert isinstance(caught.value, OSError) and caught.value.errno == code
    assert read_jsonl(target) == [{"id": "a"}]
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.jsonl"]


def test_a_writer_that_hides_the_errno_on_a_full_disk_is_reported_too(tmp_path, monkeypatch):
    """soundfile, h5py and torch raise their own errors on a full disk; the free space tells."""
    real_statvfs = os.statvfs

    class Full:
        def __init__(self, path):
            self.stat = real_statvfs(path)

        def __getattr__(self, name):
            return 0 if name == "f_bavail" else getattr(self.stat, name)

    target = tmp_path / "clip.wav"
    with pytest.raises(RuntimeError, match="writer failed"):
        with atomic_path(target):
            raise RuntimeError("writer failed")
    monkeypatch.setattr(os, "statvfs", Full)
    with pytest.raises(DiskFullError, match="no space left on device while writing .*clip.wav"):
        with atomic_path(target):
            raise RuntimeError("writer failed")
    assert list(tmp_path.iterdir()) == []


def test_disk_full_error_survives_pickling(tmp_path):
    """Raised in a worker process, it must reach the parent unchanged."""
    error = DiskFullError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "x.mp4"))
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is DiskFullError
    assert str(back) == str(error) == f"no space left on device while writing {tmp_path / 'x.mp4'}"
