"""The demo CMU-MOSEI tree: full mp4 videos, WAV_16000, segmented transcripts and the labels CSD."""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from data_reorg.demo.assets import Assets
from data_reorg.demo.cues import CLASSES, seeded_rng
from data_reorg.demo.faces import FACE_PX
from data_reorg.demo.video import Track, random_background, random_motion, write_video
from data_reorg.demo.voices import class_speech, class_text
from data_reorg.io import write_text_atomic
from data_reorg.manifest import MOSEI_EMOTIONS
from data_reorg.media import SAMPLE_RATE, write_wav
from data_reorg.splits import load_split_lists

CSD_NAME = "CMU_MOSEI_Labels.csd"
CSD_COLUMN = {"sentiment": 0, "happy": 1, "sad": 2, "anger": 3, "surprise": 4, "disgust": 5, "fear": 6}
MOSEI_PRIMARY = {"ang": "anger", "exc": "surprise", "fru": "disgust", "hap": "happy", "neu": None, "sad": "sad"}
SENTIMENT_SIGN = {"ang": -1, "exc": 1, "fru": -1, "hap": 1, "neu": 0, "sad": -1}
UNDERSCORE_TEXT = {("mjQfQx2K__8", 3), ("_0efYOjQYRc", 3)}


class MoseiVideo(NamedTuple):
    """One demo video: real id and clip numbers, container geometry, and the traps it carries."""

    vid: str
    clips: tuple[int, ...]
    size: tuple[int, int]  # width, height
    fps: int
    csd_order: tuple[int, ...] = ()  # clips in CSD row order; empty: a seeded shuffle
    no_row: tuple[int, ...] = ()  # transcript clips that get no CSD row
    stray_row: bool = False  # a CSD row that matches no segment
    jitter: bool = False  # CSD intervals off the transcript times by < 0.5 ms
    past_end: bool = False  # the last segment ends after the media
    stereo: bool = False
    first_interval: tuple[float, float] | None = None


MOSEI_VIDEOS = (
    MoseiVideo("-3g5yACwYnA", (2, 3, 4, 9, 10, 13), (480, 360), 30, csd_order=(10, 13, 9, 2, 3, 4)),
    MoseiVideo("81406", (0, 1, 2, 3, 4, 5), (640, 360), 25, stereo=True),
    MoseiVideo("mjQfQx2K__8", (0, 1, 3, 4, 7, 8), (640, 480), 24),
    MoseiVideo("GdFP_p4eQX0", (2, 4, 5, 6, 7), (480, 360), 30, no_row=(5,), stray_row=True),
    MoseiVideo("--qXJuDtHPw", (4, 5, 6), (640, 360), 25),
    MoseiVideo("188343", (0, 1, 2, 3, 4, 5), (480, 360), 30, jitter=True),
    MoseiVideo("_0efYOjQYRc", (2, 3, 4), (640, 360), 25),
    MoseiVideo("_q7DM8WkzAQ", (2, 3, 4, 9, 15, 17), (640, 480), 24, past_end=True),
    MoseiVideo("-NFrJFQijFE", (0, 1, 2, 3), (480, 360), 30, first_interval=(-0.47755102, 4.10430839)),
)


@dataclass
class _Segment:
    clip: int
    cue: str
    start: float
    end: float
    text: str


def build_mosei(root: Path, assets: Assets, seed: int) -> dict:
    """Write the CMU_MOSEI tree under ``root``; returns its part of the truth file."""
    from data_reorg.csd import write_csd

    folds = {vid: fold for fold, vids in load_split_lists("mosei_sdk_folds").items() for vid in vids}
    mesm = {item for ids in load_split_lists("mesm_mosei").values() for item in ids}
    cues = seeded_rng(seed, "mosei-classes").permutation(
        np.resize(CLASSES, sum(len(video.clips) for video in MOSEI_VIDEOS))
    )
    truth: dict = {
        "classes": {},
        "labels": {},
        "dropped": {},
        "videos": {},
        "edge_cases": {
            "csd_row_order": {},
            "unmatched_csd_rows": {},
            "negative_start": [],
            "clipped_at_media_end": {},
            "interval_jitter_videos": [],
            "underscore_texts": {},
            "not_in_mesm": [],
            "overlapping_pairs": [],
            "stereo_wavs": [],
            "not_in_sdk_folds": [],
        },
    }
    labels = {}
    used = 0
    for video in MOSEI_VIDEOS:
        segments = plan_video(video, cues[used : used + len(video.clips)], seed, assets.filler)
        used += len(video.clips)
        duration = _write_video_media(root, video, segments, assets, seed)
        _write_transcript(root, video, segments)
        labels[video.vid] = _csd_rows(video, segments, duration, seed, truth)
        _record_video(video, segments, duration, folds.get(video.vid), mesm, truth)
    write_csd(root / CSD_NAME, labels)
    return truth


def plan_video(video: MoseiVideo, cues, seed: int, filler: list[str]) -> list[_Segment]:
    """Segments of one video (no media): short, mostly in sequence, the second overlapping the first."""
    rng = seeded_rng(seed, "mosei", video.vid)
    segments = []
    clock = rng.uniform(0.4, 1.0)
    for k, (clip, cue) in enumerate(zip(video.clips, cues)):
        if k == 0 and video.first_interval:
            start, end = video.first_interval
        else:
            gap = -rng.uniform(0.15, 0.3) if k == 1 else rng.uniform(-0.2, 0.4)
            start = round(clock + gap, 3) if k else round(clock, 3)
            end = round(start + rng.uniform(1.2, 3.0), 3)
        text = class_text(rng, str(cue), filler)
        if (video.vid, clip) in UNDERSCORE_TEXT:
            text += " The _____ part."
        segments.append(_Segment(clip, str(cue), start, end, text))
        clock = end
    return segments


def _media_duration(video: MoseiVideo, segments: list[_Segment]) -> float:
    """Whole frames covering the last segment plus 0.5 s, or ending 0.8 s before it (``past_end``)."""
    end = segments[-1].end + (-0.8 if video.past_end else 0.5)
    return math.ceil(end * video.fps) / video.fps


def _write_video_media(root: Path, video: MoseiVideo, segments: list[_Segment], assets: Assets, seed: int) -> float:
    """The full mp4 and the 16 kHz wav of one video; returns the media duration."""
    rng = seeded_rng(seed, "mosei-media", video.vid)
    width, height = video.size
    duration = _media_duration(video, segments)
    scale = 0.35 * height / FACE_PX
    resting = assets.resting_faces[zlib.crc32(video.vid.encode()) % len(assets.resting_faces)]
    track = Track(
        random_background(rng, width, height), video.fps, resting, random_motion(rng, width / 2, height / 2, scale)
    )
    track.add(0.0, max(0.0, segments[0].start), None)
    num_samples = round(duration * SAMPLE_RATE)
    audio = rng.normal(0, 0.003, num_samples).astype(np.float32)
    for segment in segments:
        track.add(
            segment.start,
            segment.end,
            assets.class_face(segment.cue, rng),
            random_motion(rng, width / 2, height / 2, scale),
        )
        first = round(max(0.0, segment.start) * SAMPLE_RATE)
        stop = round(segment.end * SAMPLE_RATE)
        speech = class_speech(assets.voices, segment.cue, stop - first, rng)[: max(0, num_samples - first)]
        audio[first : first + len(speech)] = speech + rng.normal(0, 0.003, len(speech))
    raw = root / "Raw"
    write_video(
        raw / "Videos" / "Full" / "Combined" / f"{video.vid}.mp4",
        [track],
        round(duration * video.fps),
        video.fps,
        "mp4v",
    )
    if video.stereo:
        audio = np.stack([audio, 0.6 * audio + rng.normal(0, 0.003, num_samples)], axis=1)
    write_wav(raw / "Audio" / "Full" / "WAV_16000" / f"{video.vid}.wav", audio)
    return duration


def _write_transcript(root: Path, video: MoseiVideo, segments: list[_Segment]) -> None:
    lines = [f"{video.vid}___{s.clip}___{float(s.start)!r}___{float(s.end)!r}___{s.text}\n" for s in segments]
    write_text_atomic(root / "Raw" / "Transcript" / "Segmented" / "Combined" / f"{video.vid}.txt", "".join(lines))


def _csd_row(cue: str, rng: np.random.Generator) -> np.ndarray:
    """Sentiment and six emotion scores in thirds: the cue's emotion (none for neutral), sometimes a
    weaker second one."""
    row = np.zeros(7)
    sign = SENTIMENT_SIGN[cue]
    row[0] = sign * rng.integers(1, 8) / 3 if sign else rng.integers(-1, 2) / 3
    primary = MOSEI_PRIMARY[cue]
    if primary:
        row[CSD_COLUMN[primary]] = rng.integers(2, 8) / 3
    if rng.random() < 0.3:
        second = rng.choice([e for e in MOSEI_EMOTIONS if e != primary])
        row[CSD_COLUMN[second]] = rng.integers(1, 3) / 3
    return row


def _csd_rows(
    video: MoseiVideo, segments: list[_Segment], duration: float, seed: int, truth: dict
) -> tuple[np.ndarray, np.ndarray]:
    """(features, intervals) of one video, rows in CSD order, plus the stray row if any."""
    rng = seeded_rng(seed, "mosei-csd", video.vid)
    by_clip = {s.clip: s for s in segments}
    labelled = [s.clip for s in segments if s.clip not in video.no_row]
    order: list[int | None] = list(video.csd_order) or [int(c) for c in rng.permutation(labelled)]
    if video.stray_row:
        order.insert(int(rng.integers(len(order) + 1)), None)
    features, intervals = [], []
    for clip in order:
        if clip is None:
            interval = [round(duration + 2.0, 3), round(duration + 6.5, 3)]
            features.append(_csd_row(str(rng.choice(CLASSES)), rng))
            truth["edge_cases"]["unmatched_csd_rows"][video.vid] = [{"row": len(intervals), "interval": interval}]
        else:
            segment = by_clip[clip]
            interval = [segment.start, segment.end]
            if video.jitter:
                interval = [t + rng.uniform(-4e-4, 4e-4) for t in interval]
            features.append(_csd_row(segment.cue, rng))
            truth["labels"][f"{video.vid}_{clip}"] = [
                int(features[-1][CSD_COLUMN[emotion]] > 0) for emotion in MOSEI_EMOTIONS
            ]
        intervals.append(interval)
    truth["edge_cases"]["csd_row_order"][video.vid] = order
    return np.asarray(features, np.float32), np.asarray(intervals, np.float64)


def _record_video(
    video: MoseiVideo, segments: list[_Segment], duration: float, fold: str | None, mesm: set[str], truth: dict
) -> None:
    edges = truth["edge_cases"]
    for segment in segments:
        item = f"{video.vid}_{segment.clip}"
        if segment.clip in video.no_row:
            truth["dropped"][item] = "no CSD label row"
        else:
            truth["classes"][item] = segment.cue
        if item not in mesm:
            edges["not_in_mesm"].append(item)
        if segment.start < 0:
            edges["negative_start"].append(item)
        if segment.end > duration:
            edges["clipped_at_media_end"][item] = duration
        if (video.vid, segment.clip) in UNDERSCORE_TEXT:
            edges["underscore_texts"][item] = segment.text
    edges["overlapping_pairs"] += [
        [f"{video.vid}_{a.clip}", f"{video.vid}_{b.clip}"] for a, b in zip(segments, segments[1:]) if b.start < a.end
    ]
    if video.jitter:
        edges["interval_jitter_videos"].append(video.vid)
    if video.stereo:
        edges["stereo_wavs"].append(video.vid)
    if fold is None:
        edges["not_in_sdk_folds"].append(video.vid)
    truth["videos"][video.vid] = {
        "width": video.size[0],
        "height": video.size[1],
        "fps": video.fps,
        "frames": round(duration * video.fps),
        "channels": 2 if video.stereo else 1,
        "sdk_fold": fold,
        "duration": duration,
    }
