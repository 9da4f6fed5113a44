import pytest

from data_reorg.io import atomic_path, read_text_lenient, safe_name, write_jsonl_atomic, read_jsonl


@pytest.mark.parametrize("item", ["Ses01F_impro01_F000", "-3g5yACwYnA_10", "_0efYOjQYRc_3", "81406_0",
                                  "PtH_8O__EAY_2"])
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


def test_lenient_text_reads_latin1(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes("caf\xe9: ok".encode("latin-1"))
    assert read_text_lenient(path) == "café: ok"
