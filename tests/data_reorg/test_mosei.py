"""CMU-MOSEI recipe and CSD reader/writer, on tiny releases written in the real on-disk formats."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import soundfile as sf

from data_reorg.csd import CSD_DIMENSIONS, CSDError, read_csd, write_csd
from data_reorg.io import read_jsonl
from data_reorg.manifest import MANIFEST_FIELDS, MOSEI_EMOTIONS
from data_reorg.mosei import emotion_labels, match_intervals, parse_release
from data_reorg.pipeline import RunOptions, reorganize
from data_reorg.splits import SplitSpec

RAW_TRANSCRIPTS = "Raw/Transcript/Segmented/Combined"
RAW_VIDEOS = "Raw/Videos/Full/Combined"
RAW_AUDIO = "Raw/Audio/Full/WAV_16000"


def features(sentiment: float = 0.0, **emotions: float) -> list[float]:
    """One CSD features row, emotions given by name (CSD column order is not canonical order)."""
    return [sentiment] + [emotions.get(name, 0.0) for name in CSD_DIMENSIONS[1:]]


def csd_entry(*rows: tuple[float, float, list[float]]) -> tuple[np.ndarray, np.ndarray]:
    """(features, intervals) for rows given as (start, end, features)."""
    return (
        np.array([row[2] for row in rows], dtype=float).reshape(-1, 7),
        np.array([row[:2] for row in rows], dtype=np.float64).reshape(-1, 2),
    )


def write_release(
    src: Path,
    transcripts: dict[str, list[tuple]],
    labels: dict,
    transcript_dir: str = RAW_TRANSCRIPTS,
    csd: str = "CMU_MOSEI_Labels.csd",
) -> Path:
    """Transcript files ``<vid>.txt`` (lines from (clip, start, end, text) tuples) and the labels CSD."""
    folder = src / transcript_dir
    folder.mkdir(parents=True, exist_ok=True)
    for vid, lines in transcripts.items():
        text = "".join(f"{vid}___{clip}___{start}___{end}___{words}\n" for clip, start, end, words in lines)
        (folder / f"{vid}.txt").write_text(text, encoding="utf-8")
    write_csd(src / csd, labels)
    return src


def write_video(path: Path, seconds: float, fps: int = 25, size: tuple[int, int] = (160, 120)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for index in range(round(seconds * fps)):
        writer.write(np.full((size[1], size[0], 3), (index * 7) % 256, np.uint8))
    writer.release()


def write_wav(path: Path, seconds: float, channels: tuple[float, ...] = (0.1,)) -> None:
    """A constant-valued 16 kHz wav, one value per channel, so the channel taken is visible."""
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = np.tile(np.array(channels, dtype=np.float32), (round(seconds * 16000), 1))
    sf.write(str(path), samples, 16000, subtype="PCM_16")


def by_id(items) -> dict:
    return {item.id: item for item in items}


# --- CSD -------------------------------------------------------------------------------------------


def test_csd_round_trip_keeps_ids_values_and_sdk_layout(tmp_path):
    labels = {
        "-3g5yACwYnA": csd_entry((82.753, 100.555, features(1.0, happy=2 / 3)), (4.84, 14.052, features())),
        "81406": csd_entry((-0.457596371882, 4.1, features(-2.0, fear=1 / 3))),
        "PtH_8O__EAY": csd_entry(),
    }
    path = tmp_path / "labels.csd"
    write_csd(path, labels)
    back = read_csd(path)
    assert set(back) == set(labels) and all(isinstance(vid, str) for vid in back)
    for vid, (feats, intervals) in labels.items():
        np.testing.assert_array_equal(back[vid][0], feats)
        np.testing.assert_array_equal(back[vid][1], intervals)
    with h5py.File(path, "r") as handle:
        assert list(handle.keys()) == ["All Labels"]
        meta = {key: json.loads(handle["All Labels/metadata"][key][0]) for key in handle["All Labels/metadata"]}
        assert handle["All Labels/data/81406/intervals"].dtype == np.float64
    assert meta["root name"] == "All Labels" and meta["dimension names"] == list(CSD_DIMENSIONS)
    assert meta["dataset name"] == "CMU-MOSEI" and meta["dataset version"] == "1.0"
    assert {"uuid", "md5", "alignment compatible", "creator", "contact"} <= set(meta)
    assert not list(tmp_path.glob(".*")), "no temporary file left behind"


def test_read_csd_errors_name_the_file(tmp_path):
    corrupt = tmp_path / "CMU_MOSEI_Labels.csd"
    corrupt.write_bytes(np.random.default_rng(0).bytes(2048))
    with pytest.raises(CSDError, match="CMU_MOSEI_Labels.csd"):
        read_csd(corrupt)
    with pytest.raises(CSDError, match="missing"):
        read_csd(tmp_path / "absent.csd")
    empty = tmp_path / "empty.csd"
    with h5py.File(empty, "w"):
        pass
    with pytest.raises(CSDError, match="empty.csd.*no top-level group"):
        read_csd(empty)
    no_data = tmp_path / "no_data.csd"
    with h5py.File(no_data, "w") as handle:
        handle.create_group("All Labels").create_group("metadata")
    with pytest.raises(CSDError, match="no_data.csd.*'data'"):
        read_csd(no_data)


def test_read_csd_merges_sdk_aligned_keys_by_index(tmp_path):
    path = tmp_path / "aligned.csd"
    with h5py.File(path, "w") as handle:
        data = handle.create_group("Aligned").create_group("data")
        for k, start in [(10, 30.0), (2, 10.0), (0, 0.0)]:
            entry = data.create_group(f"-3g5yACwYnA[{k}]")
            entry["features"] = np.full((1, 7), k, dtype=float)
            entry["intervals"] = np.array([[start, start + 5.0]])
    feats, intervals = read_csd(path)["-3g5yACwYnA"]
    assert feats[:, 0].tolist() == [0, 2, 10]
    assert intervals[:, 0].tolist() == [0.0, 10.0, 30.0]


# --- parsing ---------------------------------------------------------------------------------------


def test_transcript_ids_and_underscore_text_survive(tmp_path):
    odd_ids = ["-3g5yACwYnA", "--qXJuDtHPw", "_0efYOjQYRc", "81406", "PtH_8O__EAY"]
    transcripts = {
        vid: [(0, 0.0, 8.025, f"text of {vid}"), (1, 7.814, 13.882, "fill in _____ and ______ here")] for vid in odd_ids
    }
    labels = {vid: csd_entry((7.814, 13.882, features(happy=1)), (0.0, 8.025, features(sad=1))) for vid in odd_ids}
    parsed = parse_release(write_release(tmp_path, transcripts, labels))
    requests = by_id(parsed.requests)
    assert list(requests) == sorted(f"{vid}_{clip}" for vid in odd_ids for clip in (0, 1))
    assert parsed.drops == []
    clip = requests["PtH_8O__EAY_1"]
    assert clip.text == "fill in _____ and ______ here" and clip.group == "PtH_8O__EAY"
    assert (clip.start, clip.end, clip.dataset, clip.crop, clip.side) == (7.814, 13.882, "mosei", None, None)
    assert clip.video == tmp_path / RAW_VIDEOS / "PtH_8O__EAY.mp4"
    assert clip.audio.path == tmp_path / RAW_AUDIO / "PtH_8O__EAY.wav" and clip.audio.channel == 0
    numeric = requests["81406_0"]
    assert numeric.group == "81406" and isinstance(numeric.group, str) and numeric.text == "text of 81406"
    assert requests["-3g5yACwYnA_0"].label == [0, 0, 0, 0, 1, 0]  # sad
    assert requests["-3g5yACwYnA_1"].label == [0, 0, 0, 1, 0, 0]  # happy


def test_rows_are_matched_by_time_not_by_row_order(tmp_path):
    transcripts = {
        "-3g5yACwYnA": [(2, 4.84, 14.052, "clip two"), (5, 40.0, 50.0, "clip five"), (10, 82.753, 100.555, "clip ten")]
    }
    labels = {
        "-3g5yACwYnA": csd_entry(
            (82.753, 100.555, features(anger=1)),
            (40.0, 50.0, features(surprise=1)),
            (60.0, 70.0, features(fear=1)),
            (4.84, 14.052, features(disgust=1)),
        )
    }
    parsed = parse_release(write_release(tmp_path, transcripts, labels))
    requests = by_id(parsed.requests)
    assert requests["-3g5yACwYnA_10"].label == [1, 0, 0, 0, 0, 0]  # row 0: anger
    assert requests["-3g5yACwYnA_2"].label == [0, 1, 0, 0, 0, 0]  # row 3: disgust
    assert requests["-3g5yACwYnA_5"].label == [0, 0, 0, 0, 0, 1]  # row 1: surprise
    assert [drop.id for drop in parsed.drops] == ["-3g5yACwYnA[row 2]"]


def test_negative_start_is_clamped_for_video_and_audio(tmp_path):
    transcripts = {"-9YyBTjo1zo": [(0, -0.457596371882, 3.5, "hello")]}
    labels = {"-9YyBTjo1zo": csd_entry((-0.457596371882, 3.5, features(happy=1)))}
    (request,) = parse_release(write_release(tmp_path, transcripts, labels)).requests
    assert request.start == 0.0 and request.audio.start == 0.0
    assert request.end == 3.5 and request.audio.end == 3.5


def test_unmatched_rows_and_segments_are_dropped_and_counted(tmp_path):
    transcripts = {
        "-3g5yACwYnA": [(0, 0.0, 5.0, "labelled"), (1, 5.0, 9.0, "no row"), (2, 20.0, 30.0, "no row either")],
        "81406": [(0, 1.0, 2.0, "video absent from the csd")],
    }
    labels = {
        "-3g5yACwYnA": csd_entry((0.0, 5.0, features()), (50.0, 60.0, features(happy=1)), (8.5, 12.0, features(sad=1))),
        "hh04W3xXa5s": csd_entry((0.0, 1.0, features()), (1.0, 2.0, features())),
    }
    parsed = parse_release(write_release(tmp_path, transcripts, labels))
    assert [request.id for request in parsed.requests] == ["-3g5yACwYnA_0"]
    drops = by_id(parsed.drops)
    assert sorted(drops) == [
        "-3g5yACwYnA[row 1]",
        "-3g5yACwYnA[row 2]",
        "-3g5yACwYnA_1",
        "-3g5yACwYnA_2",
        "81406_0",
        "hh04W3xXa5s[row 0]",
        "hh04W3xXa5s[row 1]",
    ]
    assert drops["-3g5yACwYnA_1"].reason == "no label row in CMU_MOSEI_Labels.csd for -3g5yACwYnA [5.0, 9.0]"
    assert "no segmented transcript" in drops["hh04W3xXa5s[row 0]"].reason
    assert "matches no transcript segment" in drops["-3g5yACwYnA[row 2]"].reason


def test_untrusted_label_rows_drop_their_segment_with_file_video_and_row(tmp_path):
    """A NaN, infinite or out-of-range value is never read as "emotion absent"; a reversed or NaN
    interval is reported as such, not as an interval that matches no segment."""
    nan, inf = float("nan"), float("inf")
    transcripts = {
        "81406": [
            (0, 0.0, 1.0, "nan happy"),
            (1, 1.0, 2.0, "infinite sentiment"),
            (2, 2.0, 3.0, "negative anger"),
            (3, 3.0, 4.0, "reversed row"),
            (4, 4.0, 5.0, "fine"),
            (5, 5.0, 6.0, "nan interval"),
        ]
    }
    labels = {
        "81406": csd_entry(
            (0.0, 1.0, features(happy=nan)),
            (1.0, 2.0, features(inf, sad=1)),
            (2.0, 3.0, features(anger=-1 / 3)),
            (4.0, 3.0, features(fear=1)),
            (4.0, 5.0, features(surprise=1)),
            (nan, 6.0, features(happy=1)),
        )
    }
    parsed = parse_release(write_release(tmp_path, transcripts, labels))
    assert [(r.id, r.label) for r in parsed.requests] == [("81406_4", [0, 0, 0, 0, 0, 1])]
    reasons = {drop.id: drop.reason for drop in parsed.drops}
    assert reasons == {
        "81406_0": "CMU_MOSEI_Labels.csd row 0 of 81406 [0.0, 1.0]: happy is nan",
        "81406_1": "CMU_MOSEI_Labels.csd row 1 of 81406 [1.0, 2.0]: sentiment is inf",
        "81406_2": "CMU_MOSEI_Labels.csd row 2 of 81406 [2.0, 3.0]: anger -0.3333333333333333 is outside [0, 3]",
        "81406[row 3]": "CMU_MOSEI_Labels.csd row 3 of 81406 [4.0, 3.0]: interval ends before it starts",
        "81406_3": "no label row in CMU_MOSEI_Labels.csd for 81406 [3.0, 4.0]",
        "81406[row 5]": "CMU_MOSEI_Labels.csd row 5 of 81406 [nan, 6.0]: interval is not finite",
        "81406_5": "no label row in CMU_MOSEI_Labels.csd for 81406 [5.0, 6.0]",
    }
    # Untrusted values are problems (--strict stops there); a segment without a row is a known gap.
    assert {drop.id for drop in parsed.drops if not drop.expected} == {
        "81406_0",
        "81406_1",
        "81406_2",
        "81406[row 3]",
        "81406[row 5]",
    }


def test_untrusted_sentiment_drops_its_segment_and_the_range_ends_are_kept(tmp_path):
    """Sentiment is a manifest field now: a NaN or out-of-range one never reaches it as a number."""
    nan = float("nan")
    values = [nan, 3.5, -3.0001, -3.0, 3.0]
    transcripts = {"81406": [(k, float(k), k + 1.0, f"clip {k}") for k in range(len(values))]}
    labels = {"81406": csd_entry(*[(float(k), k + 1.0, features(v, happy=1)) for k, v in enumerate(values)])}
    parsed = parse_release(write_release(tmp_path, transcripts, labels))
    assert [(r.id, r.extra_labels["sentiment"]) for r in parsed.requests] == [("81406_3", -3.0), ("81406_4", 3.0)]
    where = "CMU_MOSEI_Labels.csd row {} of 81406 [{}.0, {}.0]"
    assert {drop.id: (drop.reason, drop.expected) for drop in parsed.drops} == {
        "81406_0": (f"{where.format(0, 0, 1)}: sentiment is nan", False),
        "81406_1": (f"{where.format(1, 1, 2)}: sentiment 3.5 is outside [-3, 3]", False),
        "81406_2": (f"{where.format(2, 2, 3)}: sentiment -3.0001 is outside [-3, 3]", False),
    }


def test_sentiment_and_emotion_intensity_are_the_raw_csd_scores_by_name(tmp_path):
    """Every CSD column gets its own value, so a wrong column mapping cannot pass unnoticed."""
    row = features(-1.5, happy=1 / 3, sad=2 / 3, anger=1.0, surprise=4 / 3, disgust=5 / 3, fear=2.0)
    transcripts = {"81406": [(0, 0.0, 2.0, "all columns"), (1, 2.0, 4.0, "all zero")]}
    labels = {"81406": csd_entry((2.0, 4.0, features()), (0.0, 2.0, row))}
    requests = by_id(parse_release(write_release(tmp_path, transcripts, labels)).requests)
    extra = requests["81406_0"].extra_labels
    assert list(extra) == ["sentiment", "emotion_intensity"]
    assert extra["sentiment"] == -1.5 and type(extra["sentiment"]) is float
    intensity = extra["emotion_intensity"]
    assert list(intensity) == list(MOSEI_EMOTIONS)
    assert intensity == {"anger": 1.0, "disgust": 5 / 3, "fear": 2.0, "happy": 1 / 3, "sad": 2 / 3, "surprise": 4 / 3}
    assert all(type(value) is float for value in intensity.values())
    assert requests["81406_0"].label == [int(intensity[name] > 0) for name in MOSEI_EMOTIONS]
    assert requests["81406_1"].extra_labels == {
        "sentiment": 0.0,
        "emotion_intensity": dict.fromkeys(MOSEI_EMOTIONS, 0.0),
    }


def test_all_zero_rows_are_kept(tmp_path):
    transcripts = {"81406": [(0, 0.0, 2.0, "neutral"), (1, 2.0, 4.0, "negative sentiment only")]}
    labels = {"81406": csd_entry((0.0, 2.0, features()), (2.0, 4.0, features(-3.0)))}
    parsed = parse_release(write_release(tmp_path, transcripts, labels))
    assert [request.label for request in parsed.requests] == [[0] * 6, [0] * 6]


def test_csd_columns_are_reordered_to_canonical_order():
    assert MOSEI_EMOTIONS == ("anger", "disgust", "fear", "happy", "sad", "surprise")
    for position, name in enumerate(MOSEI_EMOTIONS):
        expected = [int(k == position) for k in range(6)]
        assert emotion_labels(np.array(features(-1.0, **{name: 1 / 3}))) == expected, name
    # CSD columns [sentiment, happy, sad, anger, surprise, disgust, fear]
    row = np.array([2.0, 0.0, 1.0, 0.6667, 0.0, 0.3333, 0.0])
    assert emotion_labels(row) == [1, 1, 0, 0, 1, 0]
    assert emotion_labels(np.array([3.0, 0, 0, 0, 0, 0, 0])) == [0] * 6


def test_matching_prefers_exact_then_tolerance_then_overlap():
    segments = [(0.0, 5.0), (0.0004, 5.0003), (10.0, 20.0), (30.0, 40.0)]
    rows = [(30.0, 60.0), (0.0003, 5.0), (10.5, 20.2), (0.0, 5.0)]
    # (0, 5) takes its exact row 3 although row 1 is listed first and within tolerance;
    # (10, 20) ~ (10.5, 20.2) overlap 0.93; (30, 40) vs (30, 60) overlap 1/3 is too little.
    assert match_intervals(segments, rows) == {0: 3, 1: 1, 2: 2}
    assert match_intervals(segments[::-1], rows[::-1]) == {3: 0, 2: 2, 1: 1}
    assert match_intervals([(0.0, 5.0)], [(0.0, 5.0), (0.0, 5.0)]) == {0: 0}


def test_malformed_lines_junk_files_and_bad_bytes(tmp_path):
    src = write_release(tmp_path, {}, {"81406": csd_entry((0.0, 1.0, features(happy=1)))})
    folder = src / RAW_TRANSCRIPTS
    lines = [
        "81406___0___0.0___1.0___caf\xe9 ok",
        "",
        "81406___1___abc___2.0___bad time",
        "188343___2___0.0___1.0___other video id",
        "81406___3___1.0",
        "81406___0___0.0___1.0___duplicate clip",
        "81406___x___0.0___1.0___bad clip",
        "81406___4___2.0___1.0___reversed",
    ]
    (folder / "81406.txt").write_bytes("\n".join(lines).encode("latin-1"))
    (folder / "._81406.txt").write_bytes(b"\x00\x05\x16\x07 mac resource fork")
    (folder / ".hidden.txt").write_bytes(b"81406___9___0.0___1.0___not a transcript")
    parsed = parse_release(src)
    assert [(r.id, r.text) for r in parsed.requests] == [("81406_0", "caf\xe9 ok")]
    rel = f"{RAW_TRANSCRIPTS}/81406.txt"
    drops = by_id(parsed.drops)
    junk = [f"{RAW_TRANSCRIPTS}/{name}" for name in (".hidden.txt", "._81406.txt")]
    assert sorted(drops) == sorted([f"{rel}:{n}" for n in (3, 4, 5, 6, 7, 8)] + junk)
    assert drops[f"{rel}:6"].reason.startswith(f"{rel} line 6: duplicate clip 0")
    for name in junk:
        assert drops[name].expected and drops[name].reason.startswith(f"{name}: hidden file skipped")
    # Every line of this latin-1 file that is not UTF-8 is reported by file:line.
    assert [note.row() for note in parsed.notes] == [
        {"where": f"{rel}:1", "warning": "not valid UTF-8; decoded as latin-1"}
    ]


def test_a_bad_byte_garbles_only_its_own_line(tmp_path):
    src = write_release(tmp_path, {}, {"81406": csd_entry((0.0, 1.0, features(happy=1)), (1.0, 2.0, features(sad=1)))})
    text = "81406___0___0.0___1.0___Düsseldorf – naïve\n".encode() + b"81406___1___1.0___2.0___caf\xe9\n"
    (src / RAW_TRANSCRIPTS / "81406.txt").write_bytes(text)
    parsed = parse_release(src)
    assert [r.text for r in parsed.requests] == ["Düsseldorf – naïve", "caf\xe9"]
    assert [note.where for note in parsed.notes] == [f"{RAW_TRANSCRIPTS}/81406.txt:2"]


def test_flattened_layout_and_csd_one_level_down(tmp_path):
    transcripts = {"_0efYOjQYRc": [(0, 0.0, 8.025, "Deloitte announced ..."), (1, 7.814, 13.882, "Vettese ...")]}
    labels = {"_0efYOjQYRc": csd_entry((7.814, 13.882, features(happy=1)), (0.0, 8.025, features()))}
    src = write_release(
        tmp_path, transcripts, labels, transcript_dir="MOSEI_Raw/Transcript/Combined", csd="labels/CMU_MOSEI_Labels.csd"
    )
    for root in (src, src / "MOSEI_Raw"):
        label_file = None if root == src else src / "labels/CMU_MOSEI_Labels.csd"
        requests = by_id(parse_release(root, label_file).requests)
        assert list(requests) == ["_0efYOjQYRc_0", "_0efYOjQYRc_1"]
        assert requests["_0efYOjQYRc_1"].label == [0, 0, 0, 1, 0, 0]
        assert requests["_0efYOjQYRc_0"].video == src / "MOSEI_Raw/Videos/Full/Combined/_0efYOjQYRc.mp4"
        assert requests["_0efYOjQYRc_0"].audio.path == src / "MOSEI_Raw/Audio/WAV_16000/_0efYOjQYRc.wav"


def test_release_level_errors_are_raised(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a CMU-MOSEI release"):
        parse_release(tmp_path)
    (tmp_path / RAW_TRANSCRIPTS).mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="CMU_MOSEI_Labels.csd"):
        parse_release(tmp_path)
    (tmp_path / "CMU_MOSEI_Labels.csd").write_bytes(b"not hdf5 at all")
    with pytest.raises(CSDError, match="CMU_MOSEI_Labels.csd"):
        parse_release(tmp_path)


# --- end to end ------------------------------------------------------------------------------------


def test_end_to_end_reorganize_with_sdk_folds(tmp_path):
    src = tmp_path / "CMU_MOSEI"
    transcripts = {
        "-3g5yACwYnA": [
            (0, -0.457596371882, 1.2, "starts before zero"),
            (1, 1.0, 2.0, "inside"),
            (2, 2.5, 4.0, "runs past the end"),
            (3, 3.5, 4.5, "starts after the end"),
        ],
        "81406": [(0, 0.5, 1.5, "stereo audio")],
        "-NFrJFQijFE": [(0, -0.47755102, 0.8, "in no fold")],
        "_0efYOjQYRc": [(0, 0.0, 1.0, "corrupt video")],
        "mjQfQx2K__8": [(0, 0.0, 1.0, "no video file")],
        "PtH_8O__EAY": [(0, 0.0, 1.0, "no audio file")],
    }
    labels = {
        vid: csd_entry(
            *[(start, end, features(clip / 3 - 1, happy=1, sad=clip % 2 / 3)) for clip, start, end, _ in lines]
        )
        for vid, lines in transcripts.items()
    }
    write_release(src, transcripts, labels)
    videos, audio = src / RAW_VIDEOS, src / RAW_AUDIO
    write_video(videos / "-3g5yACwYnA.mp4", 3.0)
    write_wav(audio / "-3g5yACwYnA.wav", 3.0)
    write_video(videos / "81406.mp4", 2.0, fps=15, size=(96, 64))
    write_wav(audio / "81406.wav", 2.0, channels=(0.25, -0.5))
    write_video(videos / "-NFrJFQijFE.mp4", 1.0)
    write_wav(audio / "-NFrJFQijFE.wav", 1.0)
    (videos / "_0efYOjQYRc.mp4").write_bytes(np.random.default_rng(1).bytes(4096))
    write_wav(audio / "_0efYOjQYRc.wav", 1.0)
    write_wav(audio / "mjQfQx2K__8.wav", 1.0)
    write_video(videos / "PtH_8O__EAY.mp4", 1.0)

    out = tmp_path / "out"
    summary = reorganize(
        parse_release(src),
        SplitSpec(mode="list", list_name="mosei_sdk_folds", by_group=True),
        RunOptions(out_dir=out, jobs=1, progress=False),
    )

    rows = {row["id"]: row for row in read_jsonl(out / "manifest.jsonl")}
    assert sorted(rows) == ["-3g5yACwYnA_0", "-3g5yACwYnA_1", "-3g5yACwYnA_2", "81406_0"]
    assert summary.kept == 4 and summary.split_counts == {"train": 4, "valid": 0, "test": 0}
    first = rows["-3g5yACwYnA_0"]
    assert (first["start"], first["end"], first["label"]) == (0.0, 1.2, [0, 0, 0, 1, 0, 0])
    assert (first["fps"], first["num_frames"], first["num_samples"]) == (25.0, 30, 19200)
    assert rows["-3g5yACwYnA_1"]["label"] == [0, 0, 0, 1, 1, 0]
    clipped = rows["-3g5yACwYnA_2"]
    assert (clipped["end"], clipped["num_frames"], clipped["num_samples"]) == (3.0, 12, 8000)
    stereo = rows["81406_0"]
    assert (stereo["fps"], stereo["num_frames"], stereo["num_samples"], stereo["split"]) == (15.0, 15, 16000, "train")
    samples, rate = sf.read(str(out / stereo["audio"]), dtype="float32")
    assert rate == 16000 and samples.ndim == 1 and np.allclose(samples, 0.25, atol=1e-3)
    capture = cv2.VideoCapture(str(out / stereo["video"]))
    assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (96, 64)
    capture.release()

    drops = {row["id"]: row["reason"] for row in read_jsonl(out / "dropped.jsonl")}
    assert sorted(drops) == ["-3g5yACwYnA_3", "-NFrJFQijFE_0", "PtH_8O__EAY_0", "_0efYOjQYRc_0", "mjQfQx2K__8_0"]
    assert "starts after the end of the video" in drops["-3g5yACwYnA_3"]
    assert "-NFrJFQijFE" in drops["-NFrJFQijFE_0"] and "mosei_sdk_folds" in drops["-NFrJFQijFE_0"]
    assert "_0efYOjQYRc.mp4" in drops["_0efYOjQYRc_0"]
    assert "mjQfQx2K__8.mp4" in drops["mjQfQx2K__8_0"] and "missing" in drops["mjQfQx2K__8_0"]
    assert "PtH_8O__EAY.wav" in drops["PtH_8O__EAY_0"] and "missing" in drops["PtH_8O__EAY_0"]
    assert (out / "splits/train.txt").read_text().split() == sorted(rows)

    # The label fields, read back against the CSD file the run read.
    csd = read_csd(src / "CMU_MOSEI_Labels.csd")
    for item, row in rows.items():
        assert list(row) == [*MANIFEST_FIELDS, "sentiment", "emotion_intensity"]
        vid, clip = item.rsplit("_", 1)
        start, end = transcripts[vid][int(clip)][1:3]
        feats, intervals = csd[vid]
        (index,) = [k for k, interval in enumerate(intervals.tolist()) if interval == [start, end]]
        assert row["sentiment"] == feats[index, 0] == int(clip) / 3 - 1
        assert row["emotion_intensity"] == dict(zip(MOSEI_EMOTIONS, feats[index, [3, 5, 6, 1, 2, 4]].tolist()))
    assert rows["-3g5yACwYnA_1"]["emotion_intensity"]["sad"] == 1 / 3
