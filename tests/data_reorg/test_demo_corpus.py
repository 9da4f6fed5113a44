"""The demo corpora: exact raw formats, learnable cues, recorded traps, determinism and idempotence.

The corpora are built once per module (10-15 s on 2 cores), and twice more: with the same seed in another
folder (determinism) and with another seed over a copy (rebuild in place).
No face detector runs here: "a face is there" is checked as texture in the centre of the half, where
the blurred backgrounds have none.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import time
from collections import Counter, defaultdict
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import soundfile as sf

from data_reorg import demo
from data_reorg.demo import DemoCorpora, build_demo_corpora
from data_reorg.splits import load_split_lists

pytestmark = pytest.mark.slow

SUMMARY = re.compile(
    r"\[(\d+\.\d{4}) - (\d+\.\d{4})\]\t(Ses0[1-5][FM]_\S+)\t([a-z]{3})\t"
    r"\[(\d\.\d{4}), (\d\.\d{4}), (\d\.\d{4})\]"
)
CATEGORICAL_LINE = re.compile(r"C-(E\d|[FM]1):\t[A-Z][a-z]+;( [A-Z][a-z]+;)*\t\(.*\)")
ATTRIBUTE_LINE = re.compile(r"A-(E\d|[FM]1):\tval [1-5]; act [1-5]; dom  [1-5];\t\(.*\)")
TRANSCRIPT = re.compile(r"(?P<id>\S+) \[(?P<start>\d{3}\.\d{4})-(?P<end>\d{3}\.\d{4})\]: (?P<text>.*)")
CAT_FILE_LINE = re.compile(r"Ses0[1-5][FM]_\S+_[FM]\d{3} :[A-Z][a-z]+( state)?;")
ATR_FILE_LINE = re.compile(r"Ses0[1-5][FM]_\S+_[FM]\d{3} :act [1-5]; :val [1-5]; :dom [1-5];")
DIALOG = re.compile(r"Ses0[1-5][FM]_(impro0[1-8][ab]?|script0[1-3]_[1-3]b?)")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[DemoCorpora, float]:
    began = time.perf_counter()
    corpora = build_demo_corpora(tmp_path_factory.mktemp("demo"), seed=0)
    return corpora, time.perf_counter() - began


@pytest.fixture(scope="module")
def corpora(built) -> DemoCorpora:
    return built[0]


@pytest.fixture(scope="module")
def truth(corpora) -> dict:
    return json.loads(corpora.truth.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def emo(corpora, truth) -> dict[str, dict]:
    """Summary fields of every EmoEvaluation block, by utterance id."""
    rows = {}
    for dialog, info in truth["iemocap"]["dialogs"].items():
        path = _session(corpora, info) / f"dialog/EmoEvaluation/{dialog}.txt"
        for line in path.read_text(encoding="ascii").splitlines():
            match = SUMMARY.fullmatch(line)
            if match:
                rows[match[3]] = {"dialog": dialog, "start": float(match[1]), "end": float(match[2]), "code": match[4]}
    return rows


@pytest.fixture(scope="module")
def dialog_frames(corpora, truth, emo) -> dict[str, dict[int, np.ndarray]]:
    """The frames the tests look at (mid-utterance, blank starts, listener away), by dialog and index."""
    wanted = defaultdict(set)
    for row in emo.values():
        wanted[row["dialog"]].add(_mid_frame(row))
    for item, count in truth["iemocap"]["edge_cases"]["faceless_speaker_frames"].items():
        wanted[emo[item]["dialog"]] |= {_first_frame(emo[item]), _first_frame(emo[item]) + count}
    for dialog, (start, end) in truth["iemocap"]["edge_cases"]["listener_away"].items():
        wanted[dialog].add(int((start + end) / 2 * 30))
    return {
        dialog: _decode(_session(corpora, info) / f"dialog/avi/DivX/{dialog}.avi", wanted[dialog])
        for dialog, info in truth["iemocap"]["dialogs"].items()
    }


def _decode(path: Path, wanted: set[int]) -> dict[int, np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = {}
    for index in range(max(wanted) + 1):
        if not capture.grab():
            break
        if index in wanted:
            frames[index] = capture.retrieve()[1]
    capture.release()
    return frames


def _texture(image: np.ndarray, cx: int, cy: int, half: int = 40) -> float:
    """Mean detail (patch minus its blur) around (cx, cy): faces score 4 or more, the blurred
    backgrounds below 1."""
    patch = cv2.cvtColor(image[cy - half : cy + half, cx - half : cx + half], cv2.COLOR_BGR2GRAY)
    patch = patch.astype(np.float32)
    return float(np.abs(patch - cv2.GaussianBlur(patch, (0, 0), 4)).mean())


def _has_face(image: np.ndarray, cx: int, cy: int) -> bool:
    return _texture(image, cx, cy) > 2.5


def _blank(image: np.ndarray, cx: int, cy: int) -> bool:
    return _texture(image, cx, cy) < 1.5


def _session(corpora: DemoCorpora, dialog_info: dict) -> Path:
    return corpora.iemocap_src / f"Session{dialog_info['session']}"


def _speaker_half(frame: np.ndarray, utterance_id: str, dialog: str) -> np.ndarray:
    left = utterance_id.rsplit("_", 1)[1][0] == dialog[5]
    return frame[:, :360] if left else frame[:, 360:]


def _mid_frame(row: dict, fps: float = 30) -> int:
    return int((row["start"] + row["end"]) / 2 * fps)


def _first_frame(row: dict, fps: float = 30) -> int:
    """The first frame of an interval, by the clip cutter's rule."""
    return math.ceil(row["start"] * fps - 1e-6)


def _segments(corpora, truth) -> dict[str, tuple[float, float, str]]:
    segments = {}
    for vid in truth["mosei"]["videos"]:
        path = corpora.mosei_src / f"Raw/Transcript/Segmented/Combined/{vid}.txt"
        for line in path.read_text(encoding="utf-8").splitlines():
            assert line.startswith(f"{vid}___")
            clip, start, end, text = line[len(vid) + 3 :].split("___", 3)
            assert clip.isdigit() and re.fullmatch(r"-?\d+\.\d+", start) and re.fullmatch(r"\d+\.\d+", end)
            segments[f"{vid}_{clip}"] = (float(start), float(end), text)
    return segments


# ----------------------------------------------------------------------------------------------------
# Build: time, size, idempotence, determinism
# ----------------------------------------------------------------------------------------------------


def test_build_time_and_size_are_bounded(built):
    corpora, seconds = built
    size = sum(path.stat().st_size for path in corpora.truth.parent.rglob("*") if path.is_file())
    print(f"demo corpora: built in {seconds:.1f} s, {size / 1e6:.1f} MB")
    assert seconds < 120
    assert size < 100e6


def test_second_call_returns_the_complete_build_without_rewriting(corpora):
    root = corpora.truth.parent
    before = {path: path.stat().st_mtime_ns for path in root.rglob("*") if path.is_file()}
    began = time.perf_counter()
    again = build_demo_corpora(root.parent, seed=0)
    assert time.perf_counter() - began < 1.0
    assert again == corpora
    assert {path: path.stat().st_mtime_ns for path in root.rglob("*") if path.is_file()} == before
    assert json.loads((root / ".complete").read_text()) == {"version": demo.DEMO_VERSION, "seed": 0}


def test_same_seed_gives_identical_files(corpora, demo_data):
    """This module's build and the session's ``data-reorg demo`` build (both seed 0) hold the same files."""
    first, second = corpora.truth.parent, demo_data.raw_iemocap.parent
    names = sorted(path.relative_to(first) for path in first.rglob("*") if path.is_file())
    assert names == sorted(path.relative_to(second) for path in second.rglob("*") if path.is_file())
    differing = [
        name for name in names if name.suffix != ".csd" and (first / name).read_bytes() != (second / name).read_bytes()
    ]
    assert differing == []
    for name in names:
        if name.suffix == ".csd":
            assert _csd_contents(first / name) == _csd_contents(second / name)


def test_another_seed_rebuilds_in_place_with_the_same_files(corpora, truth, tmp_path):
    """The file set does not depend on the seed, so a rebuild overwrites every file of the old one."""
    shutil.copytree(corpora.truth.parent, tmp_path / "raw")
    names = sorted(path.relative_to(tmp_path) for path in tmp_path.rglob("*") if path.is_file())
    rebuilt = build_demo_corpora(tmp_path, seed=1)
    assert sorted(path.relative_to(tmp_path) for path in tmp_path.rglob("*") if path.is_file()) == names
    other = json.loads(rebuilt.truth.read_text(encoding="utf-8"))
    assert json.loads((tmp_path / "raw" / ".complete").read_text())["seed"] == 1
    assert other["iemocap"]["classes"].keys() == truth["iemocap"]["classes"].keys()
    assert other["iemocap"]["classes"] != truth["iemocap"]["classes"]


def _csd_contents(path: Path) -> dict:
    contents = {}
    with h5py.File(path, "r") as handle:
        handle.visititems(
            lambda key, item: (
                contents.__setitem__(key, np.asarray(item[()]).tolist()) if isinstance(item, h5py.Dataset) else None
            )
        )
    return contents


def test_plans_depend_on_the_seed_only():
    listed = defaultdict(list)
    for ids in load_split_lists("mesm_iemocap").values():
        for item in ids:
            listed[item.rsplit("_", 1)[0]].append(item)
    filler = ["Hello?", "Neither did I."]
    plan = lambda seed: demo.plan_dialog("Ses02M_impro03", listed, seed, filler)  # noqa: E731
    assert plan(3) == plan(3)
    assert [u.id for u in plan(3).utterances] == [u.id for u in plan(4).utterances]
    assert [(u.cue, u.start) for u in plan(3).utterances] != [(u.cue, u.start) for u in plan(4).utterances]


# ----------------------------------------------------------------------------------------------------
# IEMOCAP: layout and text formats
# ----------------------------------------------------------------------------------------------------


def test_iemocap_layout(corpora, truth):
    root = corpora.iemocap_src
    assert (root / "README.txt").is_file() and any((root / "Documentation").iterdir())
    dialogs = truth["iemocap"]["dialogs"]
    assert len({info["session"] for info in dialogs.values()}) >= 3
    for dialog, info in dialogs.items():
        assert DIALOG.fullmatch(dialog)
        base = _session(corpora, info)
        for rel in (
            f"dialog/avi/DivX/{dialog}.avi",
            f"dialog/wav/{dialog}.wav",
            f"dialog/transcriptions/{dialog}.txt",
            f"dialog/EmoEvaluation/{dialog}.txt",
            f"dialog/EmoEvaluation/Categorical/{dialog}_e2_cat.txt",
            f"dialog/EmoEvaluation/Attribute/{dialog}_e2_atr.txt",
        ):
            assert (base / rel).is_file(), rel
    for junk in truth["iemocap"]["edge_cases"]["junk_files"]:
        assert (root / junk).is_file() and Path(junk).name.startswith("._")
    assert not [path for path in root.rglob(".*") if ".tmp" in path.name]


def test_emo_evaluation_format(corpora, truth, emo):
    for dialog, info in truth["iemocap"]["dialogs"].items():
        text = (_session(corpora, info) / f"dialog/EmoEvaluation/{dialog}.txt").read_text()
        header, blank, *rest = text.split("\n")
        assert header == "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]" and blank == ""
        blocks = "\n".join(rest).strip("\n").split("\n\n")
        assert len(blocks) == info["utterances"]
        for block in blocks:
            summary, *votes = block.split("\n")
            assert SUMMARY.fullmatch(summary), summary
            assert len(summary.split("\t")) == 4
            assert votes and all(CATEGORICAL_LINE.fullmatch(v) or ATTRIBUTE_LINE.fullmatch(v) for v in votes), votes
    codes = {item: row["code"] for item, row in emo.items()}
    iemocap = truth["iemocap"]
    assert {item: code for item, code in codes.items() if code in demo.CLASSES} == iemocap["classes"]
    assert {item for item, code in codes.items() if code not in demo.CLASSES} == {
        item for item in iemocap["dropped"] if "XX" not in item
    }
    assert {code for code in codes.values() if code not in demo.CLASSES} == {"xxx", "sur", "fea"}


def test_annotator_subfolder_formats(corpora, truth, emo):
    for dialog, info in truth["iemocap"]["dialogs"].items():
        folder = _session(corpora, info) / "dialog/EmoEvaluation"
        cat = (folder / "Categorical" / f"{dialog}_e2_cat.txt").read_text().splitlines()
        atr = (folder / "Attribute" / f"{dialog}_e2_atr.txt").read_text().splitlines()
        assert all(CAT_FILE_LINE.fullmatch(line) for line in cat), cat
        assert all(ATR_FILE_LINE.fullmatch(line) for line in atr), atr
        assert {line.split(" ")[0] for line in cat} == {i for i, r in emo.items() if r["dialog"] == dialog}


def test_transcripts_format_and_traps(corpora, truth, emo):
    iemocap = truth["iemocap"]
    edges = iemocap["edge_cases"]
    texts, odd_lines = {}, {}
    for dialog, info in iemocap["dialogs"].items():
        rel = f"Session{info['session']}/dialog/transcriptions/{dialog}.txt"
        raw = (corpora.iemocap_src / rel).read_bytes()
        if rel in edges["latin1_files"]:
            with pytest.raises(UnicodeDecodeError):
                raw.decode("utf-8")
        for number, line in enumerate(raw.decode("latin-1").splitlines(), start=1):
            match = TRANSCRIPT.fullmatch(line)
            if match and match["id"] in emo:
                row = emo[match["id"]]
                assert (float(match["start"]), float(match["end"])) == (row["start"], row["end"])
                texts[match["id"]] = match["text"]
            else:
                odd_lines[f"{rel}:{number}"] = line
    assert set(texts) == set(emo)
    assert all(texts[item] == text for item, text in edges["texts"].items())
    special = "".join(edges["texts"].values())
    assert "[LAUGHTER]" in special and "Note:" in special and "\xe9" in special
    unlabelled = [line for line in odd_lines.values() if TRANSCRIPT.fullmatch(line)]
    assert [line.split(" ")[0] for line in unlabelled] == edges["unlabelled_transcript_ids"]
    assert edges["unlabelled_transcript_ids"] == ["Ses03F_impro03_FXX0"]
    assert {k: v for k, v in odd_lines.items() if not TRANSCRIPT.fullmatch(v)} == edges["non_utterance_lines"]


def test_ids_follow_the_mesm_lists_and_classes_are_balanced(truth):
    listed = {item for ids in load_split_lists("mesm_iemocap").values() for item in ids}
    kept = truth["iemocap"]["classes"]
    assert len(kept) >= 140 and set(kept) <= listed
    assert not set(truth["iemocap"]["dropped"]) & listed
    assert set(Counter(kept.values()).values()) == {len(kept) // 6}
    sessions = Counter(item[:5] for item in kept)
    assert len(sessions) >= 3 and min(sessions.values()) >= 40


def test_turns_overlap_across_speakers_never_within_one(truth, emo):
    pairs = truth["iemocap"]["edge_cases"]["overlapping_pairs"]
    assert len(pairs) >= 10
    by_speaker = defaultdict(list)
    for item, row in emo.items():
        by_speaker[(row["dialog"], item.rsplit("_", 1)[1][0])].append((row["start"], row["end"]))
    for spans in by_speaker.values():
        spans.sort()
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    for a, b in pairs:
        assert emo[a]["start"] < emo[b]["end"] and emo[b]["start"] < emo[a]["end"]
        assert a.rsplit("_", 1)[1][0] != b.rsplit("_", 1)[1][0]


# ----------------------------------------------------------------------------------------------------
# IEMOCAP: media
# ----------------------------------------------------------------------------------------------------


def test_dialog_videos_are_720x480_at_30_fps(corpora, truth):
    for dialog, info in truth["iemocap"]["dialogs"].items():
        capture = cv2.VideoCapture(str(_session(corpora, info) / f"dialog/avi/DivX/{dialog}.avi"))
        assert capture.get(cv2.CAP_PROP_FPS) == 30
        assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (720, 480)
        assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == info["frames"]
        capture.release()
    assert sum(info["frames"] for info in truth["iemocap"]["dialogs"].values()) <= 6200


def test_speaker_half_shows_a_centred_face(truth, emo, dialog_frames):
    """Mid-utterance, the centre of the speaker's half is textured; blank frames are not."""
    for item, row in emo.items():
        half = _speaker_half(dialog_frames[row["dialog"]][_mid_frame(row)], item, row["dialog"])
        assert _has_face(half, 180, 240) and _blank(half, 40, 60), item
    edges = truth["iemocap"]["edge_cases"]
    assert edges["faceless_speaker_frames"] and edges["listener_away"]
    for item, count in edges["faceless_speaker_frames"].items():
        row = emo[item]
        first = _first_frame(row)
        frames = dialog_frames[row["dialog"]]
        assert _blank(_speaker_half(frames[first], item, row["dialog"]), 180, 240)
        assert _has_face(_speaker_half(frames[first + count], item, row["dialog"]), 180, 240)
    for dialog, (start, end) in edges["listener_away"].items():
        assert _blank(dialog_frames[dialog][int((start + end) / 2 * 30)][:, 360:], 180, 240)


def test_face_colour_alone_predicts_the_class(truth, emo, dialog_frames):
    """Leave-one-out nearest centroid on the mean colour of the face patch beats chance (1/6) by far."""
    features, labels = [], []
    for item, cls in truth["iemocap"]["classes"].items():
        row = emo[item]
        half = _speaker_half(dialog_frames[row["dialog"]][_mid_frame(row)], item, row["dialog"])
        patch = half[200:280, 150:210].reshape(-1, 3).astype(float)
        features.append(patch.mean(0))
        labels.append(cls)
    assert _loo_nearest_centroid(np.array(features), labels) > 0.85


def _loo_nearest_centroid(features: np.ndarray, labels: list[str]) -> float:
    features = (features - features.mean(0)) / (features.std(0) + 1e-9)
    labels = np.array(labels)
    hits = 0
    for i in range(len(labels)):
        keep = np.arange(len(labels)) != i
        classes = sorted(set(labels[keep]))
        centroids = np.array([features[keep & (labels == c)].mean(0) for c in classes])
        hits += classes[int(np.argmin(((centroids - features[i]) ** 2).sum(1)))] == labels[i]
    return hits / len(labels)


def test_dialog_and_sentence_wavs(corpora, truth, emo):
    missing = truth["iemocap"]["edge_cases"]["missing_sentence_wavs"]
    assert len(missing) == 1 and missing[0] in truth["iemocap"]["classes"]
    overlapping = {item for pair in truth["iemocap"]["edge_cases"]["overlapping_pairs"] for item in pair}
    for dialog, info in truth["iemocap"]["dialogs"].items():
        base = _session(corpora, info)
        stereo, rate = sf.read(str(base / f"dialog/wav/{dialog}.wav"), dtype="int16")
        assert rate == 16000 and stereo.ndim == 2 and stereo.shape[1] == 2
        assert abs(len(stereo) - info["frames"] / 30 * 16000) <= 1
        for item, row in ((i, r) for i, r in emo.items() if r["dialog"] == dialog):
            channel = 0 if item.rsplit("_", 1)[1][0] == dialog[5] else 1
            cut = stereo[round(row["start"] * 16000) : round(row["end"] * 16000)]
            if item not in overlapping:
                power = (cut.astype(float) ** 2).mean(axis=0)
                assert power[channel] > 16 * power[1 - channel], item
            path = base / f"sentences/wav/{dialog}/{item}.wav"
            if item in missing:
                assert not path.exists()
                continue
            info_wav = sf.info(str(path))
            assert (info_wav.samplerate, info_wav.channels, info_wav.subtype) == (16000, 1, "PCM_16")
            assert np.array_equal(sf.read(str(path), dtype="int16")[0], cut[:, channel])


def _sentence_wavs(corpora, truth, emo):
    """(class, samples) of every pre-cut IEMOCAP sentence wav of the six classes."""
    for item, cls in truth["iemocap"]["classes"].items():
        row = emo[item]
        session = _session(corpora, truth["iemocap"]["dialogs"][row["dialog"]])
        path = session / f"sentences/wav/{row['dialog']}/{item}.wav"
        if path.exists():
            yield cls, sf.read(str(path), dtype="float32")[0]


def _cepstral_pitch(samples: np.ndarray, rate: int = 16000) -> float:
    """Median F0 (Hz) over the voiced-energy frames, from the real cepstrum's peak in 70-500 Hz: the
    peak sits at the pitch period whatever the spectral envelope (the class resonance)."""
    frame, lo, hi = 1024, rate // 500, rate // 70
    pitches = []
    for start in range(0, len(samples) - frame, 256):
        window = samples[start : start + frame] * np.hanning(frame)
        if (window**2).mean() > 1e-4:
            cepstrum = np.fft.irfft(np.log(np.abs(np.fft.rfft(window)) + 1e-9))
            pitches.append(rate / (lo + int(np.argmax(cepstrum[lo:hi]))))
    return float(np.median(pitches))


def _resonance_peak_db(samples: np.ndarray, centre: float, rate: int = 16000) -> float:
    """Mean power within +-0.15 octave of ``centre`` over that of its flanks 0.6-0.9 octave away (dB)."""
    power = np.abs(np.fft.rfft(samples)) ** 2 + 1e-12
    frequencies = np.fft.rfftfreq(len(samples), 1 / rate)

    def level(lo: float, hi: float) -> float:
        return 10 * np.log10(power[(frequencies >= centre * 2**lo) & (frequencies < centre * 2**hi)].mean())

    return level(-0.15, 0.15) - (level(-0.9, -0.6) + level(0.6, 0.9)) / 2


def test_voice_pitch_orders_the_classes(corpora, truth, emo):
    """The typical pitch of each class rises with its resampling factor (the speakers are alike, ~200 Hz),
    and stays within 25 % of 200 Hz times the factor."""
    pitches = defaultdict(list)
    for cls, samples in _sentence_wavs(corpora, truth, emo):
        pitches[cls].append(_cepstral_pitch(samples))
    ordered = sorted(demo.CLASSES, key=lambda cls: demo.VOICES[cls][1])
    medians = [float(np.median(pitches[cls])) for cls in ordered]
    assert medians == sorted(medians), list(zip(ordered, medians))
    for cls, median in zip(ordered, medians):
        assert abs(median / (200 * demo.VOICES[cls][1]) - 1) < 0.25, (cls, median)


def test_voice_resonance_marks_its_class(corpora, truth, emo):
    """Each class's resonance is a strong spectral peak in its own utterances (on average 9 dB or more over
    its flanks) and stands at least 5 dB higher there than in any other class's utterances."""
    peaks = defaultdict(lambda: defaultdict(list))
    for cls, samples in _sentence_wavs(corpora, truth, emo):
        for owner, (_, _, centre) in demo.VOICES.items():
            peaks[owner][cls].append(_resonance_peak_db(samples, centre))
    for owner, by_class in peaks.items():
        means = {cls: float(np.mean(values)) for cls, values in by_class.items()}
        own = means.pop(owner)
        assert own > 9 and own > max(means.values()) + 5, (owner, own, means)


def test_text_carries_class_words(truth, corpora):
    texts = {item: text.lower() for item, (_, _, text) in _segments(corpora, truth).items()}
    for dialog, info in truth["iemocap"]["dialogs"].items():
        path = _session(corpora, info) / f"dialog/transcriptions/{dialog}.txt"
        for line in path.read_bytes().decode("latin-1").splitlines():
            match = TRANSCRIPT.fullmatch(line)
            if match:
                texts[match["id"]] = match["text"].lower()
    for item, cls in [*truth["iemocap"]["classes"].items(), *truth["mosei"]["classes"].items()]:
        assert any(phrase.lower() in texts[item] for phrase in demo.CLASS_PHRASES[cls]), (item, texts[item])


def test_iemocap_recipe_keeps_and_drops_what_the_truth_says(corpora, truth):
    from data_reorg.iemocap import parse_release

    parsed = parse_release(corpora.iemocap_src)
    assert {request.id: request.label for request in parsed.requests} == truth["iemocap"]["classes"]
    drops = {drop.id for drop in parsed.drops}
    edge_cases = truth["iemocap"]["edge_cases"]
    expected = set(truth["iemocap"]["dropped"]) | set(edge_cases["non_utterance_lines"]) | set(edge_cases["junk_files"])
    assert drops == expected


# ----------------------------------------------------------------------------------------------------
# CMU-MOSEI
# ----------------------------------------------------------------------------------------------------


def test_mosei_transcripts(corpora, truth):
    segments = _segments(corpora, truth)
    mosei = truth["mosei"]
    assert len(segments) >= 40
    assert set(segments) == set(mosei["classes"]) | set(mosei["dropped"])
    edges = mosei["edge_cases"]
    assert edges["underscore_texts"]
    assert all(segments[item][2] == text and "_____" in text for item, text in edges["underscore_texts"].items())
    assert [item for item, (start, _, _) in segments.items() if start < 0] == edges["negative_start"]
    assert edges["overlapping_pairs"]
    assert all(segments[b][0] < segments[a][1] for a, b in edges["overlapping_pairs"])


def test_mosei_ids_cover_the_sdk_folds(truth):
    mesm = {item for ids in load_split_lists("mesm_mosei").values() for item in ids}
    mosei = truth["mosei"]
    assert {item for item in [*mosei["classes"], *mosei["dropped"]] if item not in mesm} == set(
        mosei["edge_cases"]["not_in_mesm"]
    )
    folds = Counter(info["sdk_fold"] for info in mosei["videos"].values())
    assert folds[None] == 1 and min(folds[name] for name in ("train", "valid", "test")) >= 2
    assert "-NFrJFQijFE" in mosei["edge_cases"]["not_in_sdk_folds"]
    assert {vid[0] for vid in mosei["videos"]} >= {"-", "_", "8"}
    assert min(Counter(mosei["classes"].values()).values()) >= 6 and len(set(mosei["classes"].values())) == 6


def test_mosei_media(corpora, truth):
    segments = _segments(corpora, truth)
    for vid, info in truth["mosei"]["videos"].items():
        capture = cv2.VideoCapture(str(corpora.mosei_src / f"Raw/Videos/Full/Combined/{vid}.mp4"))
        assert capture.get(cv2.CAP_PROP_FPS) == info["fps"]
        assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (
            info["width"],
            info["height"],
        )
        assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == info["frames"]
        own = {
            item: (max(start, 0), end)
            for item, (start, end, _) in segments.items()
            if item.rsplit("_", 1)[0] == vid and end < info["duration"]
        }
        middle = {item: int((start + end) / 2 * info["fps"]) for item, (start, end) in own.items()}
        frames = _decode(corpora.mosei_src / f"Raw/Videos/Full/Combined/{vid}.mp4", {0, *middle.values()})
        centre = (info["width"] // 2, info["height"] // 2)
        for item, index in middle.items():
            assert _has_face(frames[index], *centre) and _blank(frames[index], 40, 40), item
        if min(start for start, _ in own.values()) > 1 / info["fps"]:
            assert _blank(frames[0], *centre), f"{vid}: the intro before the first segment shows no one"
        wav = sf.info(str(corpora.mosei_src / f"Raw/Audio/Full/WAV_16000/{vid}.wav"))
        assert (wav.samplerate, wav.channels) == (16000, info["channels"])
        assert abs(wav.frames - info["duration"] * 16000) <= 1
    clipped = truth["mosei"]["edge_cases"]["clipped_at_media_end"]
    assert clipped and all(segments[item][1] > duration for item, duration in clipped.items())
    assert truth["mosei"]["edge_cases"]["stereo_wavs"]


def test_mosei_labels_csd(corpora, truth):
    mosei = truth["mosei"]
    segments = _segments(corpora, truth)
    with h5py.File(corpora.mosei_src / demo.CSD_NAME, "r") as handle:
        assert list(handle.keys()) == ["All Labels"]
        meta = {key: json.loads(value[0]) for key, value in handle["All Labels/metadata"].items()}
        assert meta["root name"] == "All Labels" and meta["dataset name"] == "CMU-MOSEI"
        assert meta["dimension names"] == ["sentiment", "happy", "sad", "anger", "surprise", "disgust", "fear"]
        data = handle["All Labels/data"]
        assert set(data.keys()) == set(mosei["videos"])
        rows = {vid: (data[vid]["features"][()], data[vid]["intervals"][()]) for vid in data}
    labels, all_zero = {}, 0
    for vid, (features, intervals) in rows.items():
        assert features.shape == (len(intervals), 7) and intervals.dtype == np.float64
        assert np.allclose(features * 3, np.round(features * 3), atol=1e-5)
        assert (features[:, 1:] >= 0).all() and (features[:, 1:] <= 3).all()
        assert (np.abs(features[:, 0]) <= 3).all()
        all_zero += int((features[:, 1:] == 0).all(axis=1).sum())
        for row, (start, end) in enumerate(intervals):
            hits = [
                item
                for item, seg in segments.items()
                if item.rsplit("_", 1)[0] == vid and abs(seg[0] - start) < 1e-3 and abs(seg[1] - end) < 1e-3
            ]
            if not hits:
                assert mosei["edge_cases"]["unmatched_csd_rows"][vid] == [{"row": row, "interval": [start, end]}]
                assert not any(
                    seg[0] < end and start < seg[1] for item, seg in segments.items() if item.rsplit("_", 1)[0] == vid
                )
                continue
            assert len(hits) == 1
            labels[hits[0]] = [int(features[row, c] > 0) for c in (3, 5, 6, 1, 2, 4)]
    assert labels == mosei["labels"] and set(labels) == set(mosei["classes"])
    assert all_zero >= 3
    first_rows = rows["-3g5yACwYnA"][1]
    assert tuple(first_rows[0]) == segments["-3g5yACwYnA_10"][:2]
    assert tuple(first_rows[3]) == segments["-3g5yACwYnA_2"][:2]


def test_mosei_recipe_keeps_and_drops_what_the_truth_says(corpora, truth):
    from data_reorg.mosei import parse_release

    parsed = parse_release(corpora.mosei_src)
    assert {request.id: request.label for request in parsed.requests} == truth["mosei"]["labels"]
    unmatched = {
        f"{vid}[row {row['row']}]"
        for vid, rows in truth["mosei"]["edge_cases"]["unmatched_csd_rows"].items()
        for row in rows
    }
    assert {drop.id for drop in parsed.drops} == set(truth["mosei"]["dropped"]) | unmatched
