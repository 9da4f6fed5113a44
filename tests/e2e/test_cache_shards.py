"""``e2e preprocess`` / ``e2e features`` by shards: built apart and merged, or through ``--executor local
--shards 2``, the cache folder holds the same bytes as one plain build (cache files and ``problems.jsonl``);
a bad clip is its shard's recorded problem while the others build; ``--face-size`` has its own folder.

Runs on six demo IEMOCAP clips (one of them with a corrupt video), copied twice."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from data_reorg.io import read_jsonl, write_jsonl_atomic
from data_reorg.shards import Shard, all_shards
from e2e.cli import main
from e2e.data.feature_cache import extract_features, feature_cache_dir
from e2e.data.preprocess import cache_path, face_cache_dir, preprocess

pytestmark = pytest.mark.slow
ROWS = 6


def small_corpus(demo: Path, dst: Path, broken: str) -> Path:
    """``ROWS`` clips of ``demo`` (manifest, clip files), the video of ``broken`` overwritten with noise."""
    rows = read_jsonl(demo / "manifest.jsonl")[:ROWS]
    for row in rows:
        for kind in ("video", "audio"):
            (dst / row[kind]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(demo / row[kind], dst / row[kind])
    write_jsonl_atomic(dst / "manifest.jsonl", rows)
    video = next(dst / row["video"] for row in rows if row["id"] == broken)
    video.write_bytes(np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    return dst


def digests(folder: Path, corpus: Path) -> dict[str, str]:
    """sha256 of every file of a cache folder; in ``problems.jsonl`` the corpus folder (the copies differ
    there) is written ``DATA_DIR``."""
    return {
        path.name: hashlib.sha256(path.read_bytes().replace(str(corpus).encode(), b"DATA_DIR")).hexdigest()
        for path in sorted(folder.iterdir())
        if path.is_file()
    }


@pytest.fixture(scope="module")
def corpora(demo_data, tmp_path_factory):
    """Two copies of the small corpus: ``single`` built plainly, ``sharded`` in two shards, then merged."""
    ids = [row["id"] for row in read_jsonl(demo_data.iemocap / "manifest.jsonl")[:ROWS]]
    owners = {item: next(shard.index for shard in all_shards(2) if shard.owns(item)) for item in ids}
    assert set(owners.values()) == {1, 2}  # both shards have rows
    broken = ids[0]
    root = tmp_path_factory.mktemp("cache_shards")
    single = small_corpus(demo_data.iemocap, root / "single", broken)
    sharded = small_corpus(demo_data.iemocap, root / "sharded", broken)
    return single, sharded, broken, owners


def test_preprocess_shards_apart_then_merged_equal_one_build(corpora, capsys):
    single, sharded, broken, owners = corpora
    plain = preprocess(single, progress=False)
    assert [problem["id"] for problem in plain.problems] == [broken]

    for shard in all_shards(2):
        summary = preprocess(sharded, shard=shard, progress=False)
        mine = [item for item, index in owners.items() if index == shard.index]
        assert summary.total == len(mine) and not (summary.cache_dir / "problems.jsonl").exists()
        record = json.loads(shard.record_path(summary.cache_dir).read_text(encoding="utf-8"))
        assert [row["id"] for row in record["failed"]] == ([broken] if broken in mine else [])
        assert summary.built == len(mine) - (broken in mine)  # the other rows of the broken one's shard go on
    code = main(["preprocess", str(sharded), "--merge", "--device", "cpu", "--no-progress"])
    assert code == 0 and "5 reused, 1 problems" in capsys.readouterr().out
    folder = face_cache_dir(sharded, 500)
    assert digests(folder, sharded) == digests(face_cache_dir(single, 500), single)  # npz files and problems.jsonl
    assert read_jsonl(folder / "problems.jsonl")[0]["id"] == broken


def test_preprocess_reruns_one_lost_shard_through_the_local_executor(corpora, capsys):
    single, sharded, broken, owners = corpora
    lost = [item for item, index in owners.items() if index == 2 and item != broken]
    for item in lost:
        cache_path(sharded, 500, item).unlink()
    # --jobs 1: the shards run one after the other in this process (a pool would start torch twice)
    code = main(["preprocess", str(sharded), "--executor", "local", "--shards", "2", "--jobs", "1", "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"{len(lost)} built, {ROWS - 1 - len(lost)} reused, 1 problems" in out
    assert digests(face_cache_dir(sharded, 500), sharded) == digests(face_cache_dir(single, 500), single)


def test_an_unfinished_shard_stops_the_merge_and_an_invalid_shard_is_a_usage_error(corpora, capsys, tmp_path):
    single, _, _, owners = corpora
    copy = shutil.copytree(single, tmp_path / "copy", ignore=shutil.ignore_patterns("cache"))
    preprocess(copy, shard=Shard(1, 2), progress=False, img_interval_ms=3000)
    assert main(["preprocess", str(copy), "--merge", "--img-interval-ms", "3000", "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "finished by no shard" in err and next(item for item, index in owners.items() if index == 2) in err
    with pytest.raises(SystemExit) as stop:
        main(["preprocess", str(copy), "--shard", "3/2"])
    assert stop.value.code == 2 and "1 <= K <= N" in capsys.readouterr().err


def test_features_shards_equal_one_build(corpora):
    single, sharded, broken, _ = corpora
    plain = extract_features(single, "minilm", 500, 32, progress=False)
    assert [problem["id"] for problem in plain.problems] == [broken]
    for shard in all_shards(2):
        extract_features(sharded, "minilm", 500, 32, progress=False, shard=shard)
    merged = extract_features(sharded, "minilm", 500, 32, progress=False, merge=True)
    assert merged.built == 0 and [problem["id"] for problem in merged.problems] == [broken]
    assert digests(feature_cache_dir(sharded, "minilm", 500), sharded) == digests(
        feature_cache_dir(single, "minilm", 500), single
    )


def test_face_size_has_its_own_cache_folder(corpora, tmp_path):
    single, _, broken, _ = corpora
    assert face_cache_dir(single, 500) == single / "cache" / "i500"
    copy = shutil.copytree(single, tmp_path / "copy", ignore=shutil.ignore_patterns("cache"))
    summary = preprocess(copy, face_size=64, img_interval_ms=2000, progress=False)
    assert summary.cache_dir == copy / "cache" / "i2000-f64" and summary.built == ROWS - 1
    item = next(row["id"] for row in read_jsonl(copy / "manifest.jsonl") if row["id"] != broken)
    with np.load(cache_path(copy, 2000, item, face_size=64)) as archive:
        assert archive["faces"].shape[1:] == (64, 64, 3)
    assert not (copy / "cache" / "i2000").exists()
