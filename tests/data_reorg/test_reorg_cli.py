"""``data-reorg`` end to end on the demo corpora: what is kept and dropped, verify, stats, splits,
resuming (including after SIGKILL), corrupt inputs and the exit-status contract.

The session fixture ``demo_data`` builds and reorganizes both corpora once (random 60/20/20, seed 0).
Here one more full IEMOCAP run goes into a fresh folder (module fixture); every other run either
reuses finished clips (a copy of a reorganized folder, same source) or cuts a few dialogs only.
Raw trees are copied only where a test modifies them.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout, suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data_reorg.cli import main
from data_reorg.csd import read_csd
from data_reorg.io import read_jsonl, sha256_file, write_jsonl_atomic
from data_reorg.manifest import (
    EXTRA_LABEL_FIELDS,
    IEMOCAP_CLASSES,
    MANIFEST_FIELDS,
    MOSEI_EMOTIONS,
    SPLITS,
    VAD_DIMENSIONS,
    load_manifest,
)
from data_reorg.media import decodable_frames, frame_span, probe_video
from data_reorg.splits import load_split_lists
from tests.helpers.processes import default_signals, still_running, wait_for_workers

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DEMO_SPLIT = ("--split", "random", "--seed", "0", "--ratios", "0.6,0.2,0.2")
TEMP_NAME = re.compile(r"^\..+\.tmp\d+(\.\w+)?$")
SUMMARY = re.compile(
    r"kept (\d+) \(train (\d+), valid (\d+), test (\d+)\), dropped (\d+) "
    r".*reused (\d+) finished"
)


@dataclass
class Run:
    code: int
    out: str
    err: str

    def summary(self) -> dict[str, int]:
        match = SUMMARY.search(self.out)
        assert match, f"no run summary in {self.out!r}"
        return dict(zip(("kept", "train", "valid", "test", "dropped", "reused"), map(int, match.groups())))


def cli(*args) -> Run:
    """``data-reorg ARGS`` in this process; stdout and stderr captured."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main([str(arg) for arg in args])
    return Run(code, out.getvalue(), err.getvalue())


def manifest(out: Path) -> list[dict]:
    return read_jsonl(out / "manifest.jsonl")


def dropped(out: Path) -> dict[str, str]:
    return {row["id"]: row["reason"] for row in read_jsonl(out / "dropped.jsonl")}


def splits(out: Path) -> dict[str, list[str]]:
    return {name: (out / "splits" / f"{name}.txt").read_text(encoding="utf-8").split() for name in SPLITS}


def kept_truth(truth: dict, corpus: str) -> set[str]:
    return set(truth[corpus]["classes"]) - set(truth[corpus]["dropped"])


def flip_byte(path: Path) -> None:
    """Overwrite the middle byte of ``path`` with a different value."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def file_times(out: Path) -> dict[str, int]:
    return {
        path.relative_to(out).as_posix(): path.stat().st_mtime_ns
        for folder in ("video", "audio", "meta")
        for path in (out / folder).iterdir()
    }


def tree_listing(root: Path) -> dict[str, tuple[int, int]]:
    return {
        path.relative_to(root).as_posix(): (path.stat().st_size, path.stat().st_mtime_ns) for path in root.rglob("*")
    }


def copy_out(src: Path, dst: Path) -> Path:
    """A copy of a reorganized folder: a rerun from the same source reuses its clips."""
    shutil.copytree(src, dst)
    return dst


# =====================================================================================================
# Module fixtures
# =====================================================================================================


@pytest.fixture(scope="module")
def fresh_iemocap(demo_data, tmp_path_factory) -> tuple[Path, Run]:
    """The demo IEMOCAP reorganized again, into a new folder, with the demo's split parameters."""
    out = tmp_path_factory.mktemp("fresh") / "iemocap"
    run = cli("iemocap", demo_data.raw_iemocap, out, *DEMO_SPLIT, "--jobs", "2", "--no-progress")
    assert run.code == 0, run.err
    return out, run


CORRUPT_DIALOG = "Ses01F_impro01"  # sorted first: under --strict --jobs 1 it is the first video cut
MALFORMED_DIALOG = "Ses01F_script01_1"


@pytest.fixture(scope="module")
def corrupt_iemocap(demo_data, tmp_path_factory) -> dict:
    """A copy of the raw IEMOCAP with a corrupt dialog avi and (later) a malformed summary line.

    Runs: --strict with the corrupt avi alone; then, with the malformed line added too, a normal run and
    a --strict run.
    """
    base = tmp_path_factory.mktemp("corrupt")
    src = base / "IEMOCAP_full_release"
    shutil.copytree(demo_data.raw_iemocap, src)
    avi = src / "Session1" / "dialog" / "avi" / "DivX" / f"{CORRUPT_DIALOG}.avi"
    avi.write_bytes(np.random.default_rng(0).integers(0, 256, 200_000, dtype=np.uint8).tobytes())
    strict_avi = cli("iemocap", src, base / "strict_avi", *DEMO_SPLIT, "--strict", "--jobs", "1", "--no-progress")

    emo = src / "Session1" / "dialog" / "EmoEvaluation" / f"{MALFORMED_DIALOG}.txt"
    lines = emo.read_text(encoding="utf-8").split("\n")
    number = next(
        i
        for i, line in enumerate(lines, start=1)
        if line.startswith("[") and line.split("\t")[1] in demo_data.truth["iemocap"]["classes"]
    )
    fields = lines[number - 1].split("\t")
    malformed_id = fields[1]
    lines[number - 1] = "\t".join(fields[:2]) + " " + "\t".join(fields[2:])  # 3 TAB-separated fields
    emo.write_text("\n".join(lines), encoding="utf-8")

    run = cli("iemocap", src, base / "out", *DEMO_SPLIT, "--jobs", "2", "--no-progress")
    strict_line = cli("iemocap", src, base / "strict_line", *DEMO_SPLIT, "--strict", "--no-progress")
    return {
        "src": src,
        "avi": avi,
        "out": base / "out",
        "run": run,
        "strict_avi": strict_avi,
        "strict_line": strict_line,
        "malformed_id": malformed_id,
        "malformed_where": f"Session1/dialog/EmoEvaluation/{MALFORMED_DIALOG}.txt:{number}",
    }


# =====================================================================================================
# 1. What is kept and what is dropped
# =====================================================================================================


LABEL_FIELDS = {"iemocap": ("vad",), "mosei": ("sentiment", "emotion_intensity")}


def _check_label_fields(row: dict, dataset: str) -> None:
    """The optional label fields of a demo row: present for its corpus, in range (the demo has no bad value)."""
    assert list(row) == [*MANIFEST_FIELDS, *LABEL_FIELDS[dataset]], row["id"]
    if dataset == "iemocap":
        assert list(row["vad"]) == list(VAD_DIMENSIONS) and all(1 <= v <= 5 for v in row["vad"].values())
        return
    assert isinstance(row["sentiment"], float) and -3 <= row["sentiment"] <= 3
    intensity = row["emotion_intensity"]
    assert list(intensity) == list(MOSEI_EMOTIONS) and all(0 <= v <= 3 for v in intensity.values())
    assert row["label"] == [int(intensity[name] > 0) for name in MOSEI_EMOTIONS]


def _check_rows(out: Path, rows: list[dict], dataset: str) -> None:
    out_resolved = out.resolve()
    for row in rows:
        _check_label_fields(row, dataset)
        assert row["dataset"] == dataset
        assert row["split"] in SPLITS
        assert 0 <= row["start"] < row["end"]
        assert row["num_frames"] > 0 and row["num_samples"] > 0 and row["fps"] > 0
        assert set(row["sha256"]) == {"video", "audio"}
        assert row["video"] == f"video/{row['id']}.mp4" and row["audio"] == f"audio/{row['id']}.wav"
        assert row["audio_source"] in (
            "sentence_wav",
            "dialog_wav_channel_0",
            "dialog_wav_channel_1",
            "full_wav_channel_0",
        )
        for kind in ("video", "audio"):
            assert not Path(row[kind]).is_absolute()
            path = (out / row[kind]).resolve()
            assert out_resolved in path.parents and path.is_file()
    assert len({row["id"] for row in rows}) == len(rows)
    listed = splits(out)
    assert {name: sorted(ids) for name, ids in listed.items()} == {
        name: sorted(row["id"] for row in rows if row["split"] == name) for name in SPLITS
    }


def test_iemocap_keeps_and_drops_what_the_truth_says(demo_data):
    truth, out = demo_data.truth["iemocap"], demo_data.iemocap
    rows = manifest(out)
    assert {row["id"] for row in rows} == kept_truth(demo_data.truth, "iemocap")
    assert len(rows) == 144
    for row in rows:
        assert row["label"] == truth["classes"][row["id"]]
        assert row["side"] in ("L", "R") and row["fps"] == 30.0
    _check_rows(out, rows, "iemocap")

    drops = dropped(out)
    assert set(truth["dropped"]) <= set(drops)
    for item, why in truth["dropped"].items():
        reason = drops[item]
        code = re.match(r"emotion code (\w+)", why)
        expected = [f"'{code[1]}'"] if code else ["unlabelled", "XX"]
        assert all(word in reason for word in expected), (item, reason)
    # Everything else dropped is a non-utterance line, named by file:line, or a skipped junk file.
    junk = set(truth["edge_cases"]["junk_files"])
    for item in set(drops) - set(truth["dropped"]):
        assert item in truth["edge_cases"]["non_utterance_lines"] or item in junk, item
    assert all("hidden file skipped" in drops[item] for item in junk)
    # The utterance whose sentence wav is missing is kept (dialog wav channel), and says so.
    missing_wavs = set(truth["edge_cases"]["missing_sentence_wavs"])
    assert missing_wavs <= {row["id"] for row in rows}
    for row in rows:
        expected = f"dialog_wav_channel_{'LR'.index(row['side'])}" if row["id"] in missing_wavs else "sentence_wav"
        assert row["audio_source"] == expected, row["id"]
    summary = json.loads((out / "reorg.json").read_text(encoding="utf-8"))
    assert sum(summary["audio_sources"].values()) == len(rows)
    assert summary["audio_sources"]["sentence_wav"] == len(rows) - len(missing_wavs)
    # Every line of the latin-1 transcript that is not UTF-8 is a warning naming file:line.
    latin1 = set(truth["edge_cases"]["latin1_files"])
    assert latin1 and summary["warnings"]
    assert all(w["where"].rsplit(":", 1)[0] in latin1 and "latin-1" in w["warning"] for w in summary["warnings"])


def test_mosei_keeps_and_drops_what_the_truth_says(demo_data):
    truth, out = demo_data.truth["mosei"], demo_data.mosei
    rows = {row["id"]: row for row in manifest(out)}
    assert set(rows) == kept_truth(demo_data.truth, "mosei") == set(truth["labels"])
    for item, row in rows.items():
        assert row["label"] == truth["labels"][item]
        assert len(row["label"]) == len(MOSEI_EMOTIONS) and set(row["label"]) <= {0, 1}
        assert row["side"] is None
        assert row["fps"] == truth["videos"][item.rsplit("_", 1)[0]]["fps"]
    _check_rows(out, list(rows.values()), "mosei")

    drops = dropped(out)
    for item in truth["dropped"]:
        assert item in drops and "no label row" in drops[item]
    for vid, stray in truth["edge_cases"]["unmatched_csd_rows"].items():
        assert f"{vid}[row {stray[0]['row']}]" in drops
    junk = truth["edge_cases"].get("junk_files", [])
    assert all("hidden file skipped" in drops[item] for item in junk)
    assert len(drops) == len(truth["dropped"]) + len(truth["edge_cases"]["unmatched_csd_rows"]) + len(junk)
    assert all(row["audio_source"] == "full_wav_channel_0" for row in rows.values())

    negative = truth["edge_cases"]["negative_start"]
    assert negative and all(rows[item]["start"] == 0.0 for item in negative)
    for item, duration in truth["edge_cases"]["clipped_at_media_end"].items():
        assert abs(rows[item]["end"] - duration) < 1e-3, item
    stereo = [item for item in rows if item.rsplit("_", 1)[0] in truth["edge_cases"]["stereo_wavs"]]
    assert stereo
    for item in stereo:
        info = sf.info(str(out / rows[item]["audio"]))
        assert (info.channels, info.samplerate, info.frames) == (1, 16000, rows[item]["num_samples"])


def _summary_vads(src: Path) -> dict[str, list[float]]:
    """id -> the [V, A, D] numbers of each consensus summary line of the raw EmoEvaluation files."""
    vads = {}
    for path in src.glob("Session*/dialog/EmoEvaluation/Ses*.txt"):
        for line in path.read_text(encoding="latin-1").splitlines():
            if line.startswith("["):
                fields = line.split("\t")
                vads[fields[1]] = [float(value) for value in fields[3].strip("[]").split(",")]
    return vads


def test_iemocap_vad_is_the_summary_lines_triple_and_follows_the_class(demo_data):
    rows = manifest(demo_data.iemocap)
    vads = _summary_vads(demo_data.raw_iemocap)
    for row in rows:
        assert row["vad"] == dict(zip(VAD_DIMENSIONS, vads[row["id"]])), row["id"]
    assert len({tuple(row["vad"].values()) for row in rows}) >= 10
    valence = {code: [row["vad"]["valence"] for row in rows if row["label"] == code] for code in IEMOCAP_CLASSES}
    pleasant, unpleasant = valence["hap"] + valence["exc"], valence["ang"] + valence["sad"] + valence["fru"]
    assert np.mean(pleasant) > np.mean(unpleasant) + 1


def _transcript_times(src: Path, vid: str) -> dict[str, tuple[float, float]]:
    path = src / "Raw" / "Transcript" / "Segmented" / "Combined" / f"{vid}.txt"
    times = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        clip, start, end, _ = line[len(vid) + 3 :].split("___", 3)
        times[f"{vid}_{clip}"] = (float(start), float(end))
    return times


def test_mosei_sentiment_and_intensity_are_the_csd_row_and_follow_the_cue(demo_data):
    rows = manifest(demo_data.mosei)
    csd = read_csd(demo_data.raw_mosei / "CMU_MOSEI_Labels.csd")
    for row in rows:
        vid = row["id"].rsplit("_", 1)[0]
        start, end = _transcript_times(demo_data.raw_mosei, vid)[row["id"]]
        features, intervals = csd[vid]
        (index,) = np.flatnonzero(np.abs(intervals - [start, end]).max(axis=1) < 1e-3)
        assert row["sentiment"] == features[index, 0], row["id"]
        assert row["emotion_intensity"] == dict(zip(MOSEI_EMOTIONS, features[index, [3, 5, 6, 1, 2, 4]].tolist()))
    assert len({row["sentiment"] for row in rows}) >= 6
    cues = demo_data.truth["mosei"]["classes"]
    for row in rows:
        cue, sentiment = cues[row["id"]], row["sentiment"]
        assert sentiment > 0 if cue in ("hap", "exc") else sentiment < 0 if cue != "neu" else abs(sentiment) < 0.34


# =====================================================================================================
# 7. Ids that start with "-", "_" or a digit are file names unchanged
# =====================================================================================================


def test_mosei_ids_survive_into_file_names(demo_data):
    out = demo_data.mosei
    awkward = [row for row in manifest(out) if row["id"][0] in "-_" or row["id"][0].isdigit()]
    assert {row["id"][0] for row in awkward} >= {"-", "_", "1", "8"}
    for row in awkward:
        assert (out / "video" / f"{row['id']}.mp4").is_file()
        assert (out / "audio" / f"{row['id']}.wav").is_file()
        assert (out / "meta" / f"{row['id']}.json").is_file()
        assert row["video"] == f"video/{row['id']}.mp4"
    # Even an id that looks like a command-line option is a plain file name.
    assert any(row["id"].startswith("--") for row in awkward)


# =====================================================================================================
# 2. verify
# =====================================================================================================


def test_verify_passes_on_the_demo_output(demo_data):
    for out in (demo_data.iemocap, demo_data.mosei):
        run = cli("verify", out)
        assert run.code == 0, run.out
        assert "all clips match the manifest" in run.out


def test_verify_names_a_clip_with_one_changed_byte(demo_data, tmp_path):
    out = copy_out(demo_data.mosei, tmp_path / "mosei")
    victim = "-3g5yACwYnA_10"
    flip_byte(out / "video" / f"{victim}.mp4")
    run = cli("verify", out)
    assert run.code == 1
    named = {line.split(": ", 1)[0] for line in run.out.splitlines()[:-1]}
    assert named == {victim}
    assert "sha256" in run.out and "1 clips fail" in run.out


# =====================================================================================================
# 3. stats
# =====================================================================================================


def _parse_table(text: str) -> dict[str, dict[str, str]]:
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return {
        cells[0]: dict(zip(header, cells))
        for cells in ([cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:])
    }


@pytest.mark.parametrize("corpus", ["iemocap", "mosei"])
def test_stats_counts_match_the_manifest(demo_data, corpus):
    out = getattr(demo_data, corpus)
    rows = manifest(out)
    names = IEMOCAP_CLASSES if corpus == "iemocap" else MOSEI_EMOTIONS

    def positives(row):
        return [row["label"]] if corpus == "iemocap" else [n for n, v in zip(names, row["label"]) if v]

    expected = {}
    for split in SPLITS + ("all",):
        chosen = [row for row in rows if split in ("all", row["split"])]
        expected[split] = {
            "utterances": len(chosen),
            "classes": {name: sum(name in positives(row) for row in chosen) for name in names},
        }

    run = cli("stats", out)
    assert run.code == 0
    table = _parse_table(run.out)
    assert set(table) == set(SPLITS) | {"all"}
    for split, entry in expected.items():
        assert int(table[split]["utts"]) == entry["utterances"]
        assert {name: int(table[split][name]) for name in names} == entry["classes"]
    assert f"dropped: {len(dropped(out))}" in run.out

    run = cli("stats", out, "--json")
    assert run.code == 0
    data = json.loads(run.out)
    assert data["dropped"] == len(dropped(out))
    for split, entry in expected.items():
        assert data["splits"][split]["utterances"] == entry["utterances"]
        assert data["splits"][split]["classes"] == entry["classes"]
        hours = sum(row["end"] - row["start"] for row in rows if split in ("all", row["split"])) / 3600
        assert data["splits"][split]["hours"] == pytest.approx(hours, abs=1e-4)


# =====================================================================================================
# 4. Splits
# =====================================================================================================


def test_random_split_is_the_same_in_a_new_folder(demo_data, fresh_iemocap):
    out, run = fresh_iemocap
    assert run.summary()["reused"] == 0
    assert splits(out) == splits(demo_data.iemocap)
    for name in SPLITS:
        assert (out / "splits" / f"{name}.txt").read_bytes() == (
            demo_data.iemocap / "splits" / f"{name}.txt"
        ).read_bytes()
    # Clips, checksums and all: an independent run gives the same bytes.
    assert (out / "manifest.jsonl").read_bytes() == (demo_data.iemocap / "manifest.jsonl").read_bytes()


def test_another_seed_gives_another_split(demo_data, fresh_iemocap, tmp_path):
    out = copy_out(fresh_iemocap[0], tmp_path / "seed1")
    run = cli(
        "iemocap",
        demo_data.raw_iemocap,
        out,
        "--split",
        "random",
        "--seed",
        "1",
        "--ratios",
        "0.6,0.2,0.2",
        "--no-progress",
    )
    assert run.code == 0
    before, after = splits(fresh_iemocap[0]), splits(out)
    assert after != before
    assert sorted(sum(after.values(), [])) == sorted(sum(before.values(), []))
    assert [len(after[name]) for name in SPLITS] == [len(before[name]) for name in SPLITS]


def test_mesm_split_keeps_the_listed_ids_and_reports_the_rest_missing(demo_data, fresh_iemocap, tmp_path, caplog):
    lists = load_split_lists("mesm_iemocap")
    listed = {item: name for name, ids in lists.items() for item in ids}
    out = copy_out(fresh_iemocap[0], tmp_path / "mesm")
    with caplog.at_level("WARNING", logger="data_reorg"):
        run = cli("iemocap", demo_data.raw_iemocap, out, "--split", "mesm", "--no-progress")
    assert run.code == 0
    rows = manifest(out)
    kept = kept_truth(demo_data.truth, "iemocap")
    assert {row["id"] for row in rows} == kept & set(listed)
    assert all(row["split"] == listed[row["id"]] for row in rows)
    missing = len(set(listed) - kept)
    assert json.loads((out / "reorg.json").read_text())["split_list_ids_missing_from_corpus"] == missing
    assert any(
        f"{missing} ids of the split lists are not in this corpus" in record.getMessage()
        for record in caplog.records
        if record.levelname == "WARNING"
    )


def test_mosei_mesm_split_drops_unlisted_segments(demo_data, tmp_path, caplog):
    listed = {item: name for name, ids in load_split_lists("mesm_mosei").items() for item in ids}
    out = copy_out(demo_data.mosei, tmp_path / "mosei_mesm")
    with caplog.at_level("WARNING", logger="data_reorg"):
        run = cli("mosei", demo_data.raw_mosei, out, "--split", "mesm", "--no-progress")
    assert run.code == 0
    kept = kept_truth(demo_data.truth, "mosei")
    unlisted = kept - set(listed)
    assert unlisted and unlisted <= set(demo_data.truth["mosei"]["edge_cases"]["not_in_mesm"])
    rows = manifest(out)
    assert {row["id"] for row in rows} == kept - unlisted
    assert all(row["split"] == listed[row["id"]] for row in rows)
    drops = dropped(out)
    assert all("mesm_mosei" in drops[item] for item in unlisted)
    assert any("not in this corpus" in record.getMessage() for record in caplog.records)


def test_session_split_is_speaker_independent(demo_data, fresh_iemocap, tmp_path):
    out = copy_out(fresh_iemocap[0], tmp_path / "session")
    explicit = ("--test-session", "1", "--valid-session", "3")
    for extra, expected in (
        ((), {"1": "train", "2": "valid", "3": "test"}),
        (explicit, {"1": "test", "2": "train", "3": "valid"}),
    ):
        run = cli("iemocap", demo_data.raw_iemocap, out, "--split", "session", *extra, "--no-progress")
        assert run.code == 0
        assert run.summary()["reused"] == 144
        rows = manifest(out)
        assert {row["id"] for row in rows} == kept_truth(demo_data.truth, "iemocap")
        by_session: dict[str, set[str]] = {}
        for row in rows:
            by_session.setdefault(row["id"][4], set()).add(row["split"])
        assert {session: sorted(found) for session, found in by_session.items()} == {
            session: [split] for session, split in expected.items()
        }


def test_mosei_sdk_split_follows_the_video_folds(demo_data, tmp_path):
    truth = demo_data.truth["mosei"]
    out = copy_out(demo_data.mosei, tmp_path / "sdk")
    run = cli("mosei", demo_data.raw_mosei, out, "--split", "sdk", "--no-progress")
    assert run.code == 0
    unfolded = truth["edge_cases"]["not_in_sdk_folds"]
    assert unfolded == ["-NFrJFQijFE"]
    kept = kept_truth(demo_data.truth, "mosei")
    orphans = {item for item in kept if item.rsplit("_", 1)[0] in unfolded}
    assert len(orphans) == 4
    rows = manifest(out)
    assert {row["id"] for row in rows} == kept - orphans
    drops = dropped(out)
    for item in orphans:
        assert "-NFrJFQijFE" in drops[item] and "mosei_sdk_folds" in drops[item]
    by_video: dict[str, set[str]] = {}
    for row in rows:
        by_video.setdefault(row["id"].rsplit("_", 1)[0], set()).add(row["split"])
    assert by_video == {vid: {info["sdk_fold"]} for vid, info in truth["videos"].items() if info["sdk_fold"]}


# =====================================================================================================
# 5. Resuming
# =====================================================================================================


def test_rerun_reuses_every_clip(demo_data, fresh_iemocap):
    out, _ = fresh_iemocap
    manifest_bytes, times = (out / "manifest.jsonl").read_bytes(), file_times(out)
    run = cli("iemocap", demo_data.raw_iemocap, out, *DEMO_SPLIT, "--no-progress")
    assert run.code == 0
    assert run.summary()["reused"] == 144 and "reused 144 finished clips" in run.out
    assert (out / "manifest.jsonl").read_bytes() == manifest_bytes
    assert file_times(out) == times


def test_rerun_over_the_demo_output_reuses_every_clip(demo_data, tmp_path):
    """``make demo`` then ``data-reorg iemocap`` with the demo's parameters: nothing is cut again."""
    out = copy_out(demo_data.iemocap, tmp_path / "iemocap")
    run = cli("iemocap", demo_data.raw_iemocap, out, *DEMO_SPLIT, "--no-progress")
    assert run.code == 0
    assert run.summary()["reused"] == 144
    assert (out / "manifest.jsonl").read_bytes() == (demo_data.iemocap / "manifest.jsonl").read_bytes()


@pytest.mark.parametrize("corpus", ["iemocap", "mosei"])
def test_rerun_over_an_output_written_before_the_label_fields_adds_them_without_recutting(demo_data, tmp_path, corpus):
    """Such an output has the same finished records (the label fields were never in them, and the
    fingerprint leaves them out) and a manifest without the fields: it still loads, and a rerun reuses
    every clip and writes the fields."""
    new = getattr(demo_data, corpus)
    out = copy_out(new, tmp_path / corpus)
    old_rows = [{k: v for k, v in row.items() if k not in EXTRA_LABEL_FIELDS} for row in manifest(out)]
    write_jsonl_atomic(out / "manifest.jsonl", old_rows)
    for meta in _finished_records(out):
        assert not set(json.loads(meta.read_text(encoding="utf-8"))["record"]) & set(EXTRA_LABEL_FIELDS)
    assert [set(row) for row in load_manifest(out)] == [set(MANIFEST_FIELDS)] * len(old_rows)
    assert cli("stats", out).code == 0
    times = file_times(out)

    run = cli(corpus, getattr(demo_data, f"raw_{corpus}"), out, *DEMO_SPLIT, "--no-progress")
    assert run.code == 0, run.err
    assert run.summary()["reused"] == len(old_rows)
    assert file_times(out) == times
    assert (out / "manifest.jsonl").read_bytes() == (new / "manifest.jsonl").read_bytes()
    assert all(set(LABEL_FIELDS[corpus]) <= set(row) for row in manifest(out))


def test_rerun_recuts_exactly_the_missing_and_corrupt_clips(demo_data, fresh_iemocap, tmp_path):
    out = copy_out(fresh_iemocap[0], tmp_path / "resume")
    manifest_bytes = (out / "manifest.jsonl").read_bytes()
    ids = sorted(row["id"] for row in manifest(out))
    no_video, no_meta, corrupt = ids[1], ids[len(ids) // 2], ids[-2]  # three different dialogs
    assert len({item[:-5] for item in (no_video, no_meta, corrupt)}) == 3
    (out / "video" / f"{no_video}.mp4").unlink()
    (out / "meta" / f"{no_meta}.json").unlink()
    flip_byte(out / "audio" / f"{corrupt}.wav")
    times = file_times(out)

    run = cli("iemocap", demo_data.raw_iemocap, out, *DEMO_SPLIT, "--jobs", "2", "--no-progress")
    assert run.code == 0
    assert run.summary()["reused"] == 141
    assert (out / "manifest.jsonl").read_bytes() == manifest_bytes
    after = file_times(out)
    changed = {Path(name).stem for name in set(after) if times.get(name) != after[name]}
    assert changed == {no_video, no_meta, corrupt}
    assert set(after) == set(times) | {f"video/{no_video}.mp4", f"meta/{no_meta}.json"}
    assert cli("verify", out).code == 0


def _finished_records(out: Path) -> list[Path]:
    """The clips' finished records (``meta/<id>.json``); a kill may leave a hidden temporary beside them."""
    return [path for path in (out / "meta").glob("*.json") if not path.name.startswith(".")]


def _finishing(out: Path) -> bool:
    """Clips of the first dialog are being renamed into place and recorded."""
    return len(_finished_records(out)) >= 3


def _encoding(out: Path) -> bool:
    """The first dialog (24 clips) is finished and ffmpeg is writing the second one's clips."""
    return len(_finished_records(out)) >= 24 and len(list((out / "video").iterdir())) > 24


@pytest.mark.parametrize("kill_when", [_finishing, _encoding], ids=["finishing", "encoding"])
def test_killed_run_resumes_to_the_same_manifest(demo_data, fresh_iemocap, tmp_path, kill_when):
    baseline = {row["id"]: row for row in manifest(fresh_iemocap[0])}
    out = tmp_path / "killed"
    command = _reorg_command(demo_data, out, jobs=1)
    # Own session: SIGKILL reaches the ffmpeg child too, as when a machine or job is killed.
    process = subprocess.Popen(
        command, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            if kill_when(out):
                break
            time.sleep(0.01)
        still_running = process.poll() is None
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    assert still_running, "the run finished before it could be killed"
    assert not (out / "manifest.jsonl").exists()

    # Only complete files under their final names: each one is the uninterrupted run's file.
    leftovers = set()
    finished = _finished_records(out)
    assert 3 <= len(finished) < len(baseline)
    for folder, kind in (("video", "video"), ("audio", "audio"), ("meta", None)):
        for path in (out / folder).iterdir() if (out / folder).is_dir() else ():
            if path.name.startswith("."):
                assert TEMP_NAME.match(path.name), path
                leftovers.add(path.relative_to(out).as_posix())
            elif kind:
                assert sha256_file(path) == baseline[path.stem]["sha256"][kind], path
            else:
                # The finished record is the row without its split and optional label fields (those
                # come from the parse of each run).
                record = json.loads(path.read_text(encoding="utf-8"))["record"]
                per_run = {"split", *EXTRA_LABEL_FIELDS}
                assert record == {key: value for key, value in baseline[path.stem].items() if key not in per_run}
    if kill_when is _encoding:  # ffmpeg was writing: its temporary clips are left behind
        assert any(name.startswith("video/.") and name.endswith(".mp4") for name in leftovers)

    run = cli("iemocap", demo_data.raw_iemocap, out, *DEMO_SPLIT, "--jobs", "2", "--no-progress")
    assert run.code == 0
    assert run.summary()["reused"] == len(finished)
    assert (out / "manifest.jsonl").read_bytes() == (fresh_iemocap[0] / "manifest.jsonl").read_bytes()
    assert splits(out) == splits(fresh_iemocap[0])
    # A temporary file left by the kill is ignored (never referenced), and the rerun leaves none of its own.
    hidden = {
        path.relative_to(out).as_posix()
        for folder in ("video", "audio", "meta", "splits")
        for path in (out / folder).iterdir()
        if path.name.startswith(".")
    }
    assert hidden <= leftovers
    assert cli("verify", out).code == 0


# =====================================================================================================
# 6. Corrupt input, --strict, OUT inside SRC, nothing kept
# =====================================================================================================


def test_corrupt_avi_drops_its_dialog_only(demo_data, corrupt_iemocap):
    run, out = corrupt_iemocap["run"], corrupt_iemocap["out"]
    assert run.code == 0, run.err
    kept = kept_truth(demo_data.truth, "iemocap")
    in_dialog = {item for item in kept if item.startswith(CORRUPT_DIALOG + "_")}
    assert len(in_dialog) == 24
    drops = dropped(out)
    for item in in_dialog:
        assert item in drops and str(corrupt_iemocap["avi"]) in drops[item], item
    rows = manifest(out)
    assert {row["id"] for row in rows} == kept - in_dialog - {corrupt_iemocap["malformed_id"]}
    assert {row["id"][:-5] for row in rows} == set(demo_data.truth["iemocap"]["dialogs"]) - {CORRUPT_DIALOG}
    assert cli("verify", out).code == 0


def test_malformed_summary_line_is_dropped_with_file_and_line(corrupt_iemocap):
    drops = dropped(corrupt_iemocap["out"])
    where, item = corrupt_iemocap["malformed_where"], corrupt_iemocap["malformed_id"]
    assert where in drops and "malformed EmoEvaluation summary line" in drops[where]
    assert item in drops and "no EmoEvaluation label" in drops[item]


def test_strict_stops_at_a_corrupt_avi_or_a_malformed_line(corrupt_iemocap):
    run = corrupt_iemocap["strict_avi"]
    assert run.code == 2
    assert "--strict" in run.err and str(corrupt_iemocap["avi"]) in run.err
    run = corrupt_iemocap["strict_line"]
    assert run.code == 2
    assert "--strict" in run.err and corrupt_iemocap["malformed_where"] in run.err


def test_strict_accepts_the_intact_demo(demo_data, tmp_path):
    """The demo holds only expected exclusions (xxx/sur/fea codes, an XX id, a non-utterance line) and a
    missing sentence wav that the dialog wav replaces: none of them stops --strict."""
    out = tmp_path / "strict"
    run = cli("iemocap", demo_data.raw_iemocap, out, *DEMO_SPLIT, "--strict", "--jobs", "2", "--no-progress")
    assert run.code == 0, run.err
    assert run.summary()["kept"] == 144
    assert (out / "manifest.jsonl").read_bytes() == (demo_data.iemocap / "manifest.jsonl").read_bytes()
    run = cli(
        "mosei",
        demo_data.raw_mosei,
        copy_out(demo_data.mosei, tmp_path / "mosei"),
        *DEMO_SPLIT,
        "--strict",
        "--no-progress",
    )
    assert run.code == 0, run.err


def test_unreadable_csd_is_an_error_naming_the_file(demo_data, tmp_path):
    src = tmp_path / "CMU_MOSEI"
    shutil.copytree(demo_data.raw_mosei, src)
    csd = src / "CMU_MOSEI_Labels.csd"
    csd.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    run = cli("mosei", src, tmp_path / "out", "--no-progress")
    assert run.code == 2
    assert str(csd) in run.err
    assert not (tmp_path / "out" / "manifest.jsonl").exists()


def test_out_inside_src_is_refused_and_nothing_is_written(demo_data, tmp_path):
    src = tmp_path / "CMU_MOSEI"
    shutil.copytree(demo_data.raw_mosei, src)
    (tmp_path / "link").symlink_to(src, target_is_directory=True)
    before = tree_listing(src)
    for out in (src / "reorg", src, src / "Raw" / "x" / ".." / "y", tmp_path / "link" / "reorg"):
        run = cli("mosei", src, out, "--no-progress")
        assert run.code == 2, out
        assert "inside SRC" in run.err
    assert tree_listing(src) == before


def test_iemocap_out_inside_src_is_refused(demo_data, tmp_path):
    src = tmp_path / "IEMOCAP_full_release"
    shutil.copytree(demo_data.raw_iemocap, src)
    before = tree_listing(src)
    run = cli("iemocap", src, src / "Session1" / "reorg", "--no-progress")
    assert run.code == 2 and "inside SRC" in run.err
    assert tree_listing(src) == before


def test_nothing_kept_exits_1(demo_data, tmp_path):
    out = tmp_path / "none"
    run = cli("iemocap", demo_data.raw_iemocap, out, "--classes", "zzz", "--no-progress")
    assert run.code == 1
    assert run.summary()["kept"] == 0
    assert manifest(out) == []
    drops = dropped(out)
    for item in demo_data.truth["iemocap"]["classes"]:
        assert "zzz" in drops[item]


def test_damaged_meta_and_leftover_temporaries_are_handled_on_rerun(demo_data, tmp_path, capsys):
    """A garbage meta file means 'cut again', and temporary files of a killed run are removed."""
    out = tmp_path / "out"
    shutil.copytree(demo_data.iemocap, out)
    victim = sorted((out / "meta").glob("*.json"))[0]
    victim.write_text("{not json")
    leftover = out / "video" / f".{victim.stem}.tmp99999.mp4"
    leftover.write_bytes(b"partial")
    assert main(["iemocap", str(demo_data.raw_iemocap), str(out), "--ratios", "0.6,0.2,0.2", "--no-progress"]) == 0
    assert "reused 143" in capsys.readouterr().out
    assert not leftover.exists()
    assert (out / "manifest.jsonl").read_bytes() == (demo_data.iemocap / "manifest.jsonl").read_bytes()


# =====================================================================================================
# 8. A truncated source video, a full disk, old manifests
# =====================================================================================================


def test_truncated_avi_keeps_its_decodable_part_and_every_other_split(demo_data, fresh_iemocap, tmp_path):
    """The clips inside the part of the file that decodes are kept (the same bytes as from the intact
    file), the rest of the dialog is dropped with one reason, and no other id changes its split."""
    src, out = tmp_path / "IEMOCAP_full_release", tmp_path / "out"
    shutil.copytree(demo_data.raw_iemocap, src)
    avi = src / "Session1" / "dialog" / "avi" / "DivX" / f"{CORRUPT_DIALOG}.avi"
    info = probe_video(avi)
    avi.write_bytes(avi.read_bytes()[: avi.stat().st_size // 2])
    decodable = decodable_frames(avi)
    run = cli("iemocap", src, out, *DEMO_SPLIT, "--jobs", "2", "--no-progress")
    assert run.code == 0, run.err

    before = {row["id"]: row for row in manifest(fresh_iemocap[0])}
    rows = {row["id"]: row for row in manifest(out)}
    in_dialog = {item for item in before if item.startswith(CORRUPT_DIALOG + "_")}
    inside = {
        item for item in in_dialog if frame_span(before[item]["start"], before[item]["end"], info)[1] <= decodable
    }
    assert 0 < len(inside) < len(in_dialog)
    assert set(rows) == set(before) - in_dialog | inside
    assert all(rows[item] == before[item] for item in rows)  # clips, checksums and splits alike
    reasons = {reason for item, reason in dropped(out).items() if item in in_dialog}
    assert reasons == {
        f"{avi}: the video decodes only up to frame {decodable} ({decodable / info.fps:.3f} s) of "
        f"the {info.num_frames} its header declares (truncated or damaged file); "
        "clips past that point are dropped"
    }
    assert cli("verify", out).code == 0


def test_full_disk_is_an_error_naming_the_file_and_loses_nothing(demo_data, tmp_path, monkeypatch):
    out = copy_out(demo_data.iemocap, tmp_path / "iemocap")
    before = (out / "manifest.jsonl").read_bytes()
    real_write_text = Path.write_text

    def write_text(path, *args, **kwargs):
        if path.name.startswith(".manifest."):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    run = cli("iemocap", demo_data.raw_iemocap, out, *DEMO_SPLIT, "--no-progress")
    assert run.code == 2
    assert run.err == f"data-reorg: error: no space left on device while writing {out / 'manifest.jsonl'}\n"
    assert (out / "manifest.jsonl").read_bytes() == before
    assert not [path for path in out.iterdir() if path.name.startswith(".")]


def test_manifests_without_audio_source_still_load(demo_data, tmp_path):
    """Manifests written before ``audio_source`` existed are read by stats, verify and the e2e loader."""
    out = copy_out(demo_data.mosei, tmp_path / "old")
    rows = manifest(out)
    write_jsonl_atomic(out / "manifest.jsonl", [{k: v for k, v in row.items() if k != "audio_source"} for row in rows])
    assert cli("stats", out).code == 0 and cli("stats", out, "--json").code == 0
    assert cli("verify", out).code == 0
    assert len(load_manifest(out, "train")) == sum(row["split"] == "train" for row in rows)


# =====================================================================================================
# 9. Worker processes (--jobs): none outlives the run, a dead one is one clear error
# =====================================================================================================


def _reorg_command(demo_data, out: Path, jobs: int) -> list[str]:
    """``data-reorg iemocap`` of the demo corpus into ``out``, as a separate Python process."""
    return [
        sys.executable,
        "-m",
        "data_reorg.cli",
        "iemocap",
        str(demo_data.raw_iemocap),
        str(out),
        *DEMO_SPLIT,
        "--jobs",
        str(jobs),
        "--no-progress",
    ]


def _start_run(demo_data, out: Path, stderr=subprocess.DEVNULL) -> subprocess.Popen:
    return subprocess.Popen(
        _reorg_command(demo_data, out, jobs=2),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        text=True,
        preexec_fn=default_signals,
    )


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=lambda sig: sig.name)
def test_killing_a_run_leaves_no_worker_behind(demo_data, tmp_path, sig):
    """Killed while its workers cut clips (ffmpeg running); a worker still importing its modules when
    the parent dies follows as soon as its start-up is done. Ctrl-C (SIGINT) ends the run cleanly."""
    process = _start_run(demo_data, tmp_path / "out", stderr=subprocess.PIPE)
    try:
        workers = wait_for_workers(process.pid, 2, busy=True)
        os.kill(process.pid, sig)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
        process.wait()
    assert still_running(workers, within=5) == []
    if sig == signal.SIGINT:
        assert process.returncode == 130 and "Traceback" not in err
        assert "data-reorg: interrupted; finished clips are kept, rerun to resume" in err


def test_a_worker_killed_by_a_signal_stops_the_run_with_one_clear_message(demo_data, tmp_path):
    process = _start_run(demo_data, tmp_path / "out", stderr=subprocess.PIPE)
    try:
        victim = wait_for_workers(process.pid, 2)[0]
        os.kill(victim, signal.SIGKILL)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 2, err
    assert f"data-reorg: error: worker {victim} died (SIGKILL); rerun to resume" in err
    assert "Traceback" not in err and "BrokenProcessPool" not in err
