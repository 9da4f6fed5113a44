"""CMU-MOSEI recipe: raw release (full videos, 16 kHz wavs, segmented transcripts, labels CSD) -> requests.

Segments come from the segmented transcripts (their clip numbers are the ones in ``<vid>_<clip>`` ids
and in the MESM lists); labels (the multi-hot ``label``, ``sentiment``, ``emotion_intensity``) come from
``CMU_MOSEI_Labels.csd``, whose rows are matched to segments by time, never by position (row order
differs from clip order). Clips are cut from the FULL videos (the segmented mp4s have gaps).

Media files are not opened or even checked here: a missing or corrupt video or wav is reported by the
pipeline for each of its clips (``<path>: video file is missing`` ...), in the same place as every
other media problem (unreadable container, segment past the end of the media).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_reorg.csd import CSDError, interval_problem, label_problem, read_csd
from data_reorg.manifest import (
    MOSEI_EMOTIONS,
    AudioSource,
    ClipRequest,
    Drop,
    ParseResult,
    corpus_text_files,
    read_corpus_lines,
)
from data_reorg.pipeline import RunOptions, RunSummary, reorganize, resolve_source
from data_reorg.shards import Shard
from data_reorg.splits import DEFAULT_RATIOS, SplitSpec, random_split_spec

CSD_NAME = "CMU_MOSEI_Labels.csd"
SPLIT_POLICIES = ("random", "mesm", "sdk")
# Canonical emotion k (MOSEI_EMOTIONS: anger, disgust, fear, happy, sad, surprise) is CSD
# features column CSD_COLUMNS[k] (CSD order: sentiment, happy, sad, anger, surprise, disgust, fear).
CSD_COLUMNS = (3, 5, 6, 1, 2, 4)
# Row/segment matching, tried in this order: identical (start, end); both ends within MATCH_TOLERANCE
# seconds (float formatting noise); else the pair with the largest intersection-over-union, if at
# least MIN_OVERLAP (a label interval that shares most of its time with a segment describes it).
MATCH_TOLERANCE = 1e-3
MIN_OVERLAP = 0.5


@dataclass(frozen=True)
class Layout:
    """The three release folders a parse needs (both published layouts map onto this)."""

    transcripts: Path
    videos: Path
    audio: Path


@dataclass(frozen=True)
class Segment:
    vid: str
    clip: int
    start: float
    end: float
    text: str

    @property
    def id(self) -> str:
        return f"{self.vid}_{self.clip}"


def prepare_mosei(
    src: Path,
    out: Path,
    *,
    split: str = "random",
    seed: int = 0,
    ratios: Sequence[float] | str = DEFAULT_RATIOS,
    jobs: int = 1,
    strict: bool = False,
    progress: bool = True,
    labels: Path | None = None,
    shard: Shard | None = None,
    merge: bool = False,
) -> RunSummary:
    """Reorganize the release at ``src`` into clips, manifest and splits under ``out`` (``data-reorg mosei``).

    ``split``: ``random`` (``seed``, ``ratios``), ``mesm`` (the published MESM lists) or ``sdk`` (the
    CMU Multimodal SDK folds, by video). ``labels``: the CSD file, by default ``src/CMU_MOSEI_Labels.csd``.
    Raises FileNotFoundError / ValueError for a missing SRC or labels, an OUT inside SRC or a bad argument,
    StrictModeError under ``strict`` at the first segment that cannot be kept.
    """
    if split not in SPLIT_POLICIES:
        raise ValueError(f"unknown CMU-MOSEI split {split!r}; choose one of {SPLIT_POLICIES}")
    src = resolve_source(src, out)
    parsed = parse_release(src, label_file=labels)
    options = RunOptions(Path(out), jobs=jobs, strict=strict, progress=progress, shard=shard, merge=merge)
    return reorganize(parsed, _split_spec(split, seed, ratios), options)


def _split_spec(split: str, seed: int, ratios: Sequence[float] | str) -> SplitSpec:
    if split == "random":
        return random_split_spec(seed, ratios)
    if split == "mesm":
        return SplitSpec("list", list_name="mesm_mosei")
    return SplitSpec("list", list_name="mosei_sdk_folds", by_group=True)


def parse_release(src: Path, label_file: Path | None = None) -> ParseResult:
    """Requests for every transcript segment that has a label row, and drops for everything else.

    Raises FileNotFoundError when no known layout or no labels CSD is found, and CSDError when the CSD
    cannot be read: without labels nothing can be kept, so that is not a per-clip problem.
    """
    src = Path(src)
    layout = find_layout(src)
    csd_path = Path(label_file) if label_file is not None else find_csd(src)
    labels = _load_labels(csd_path)
    found = ParseResult()
    segments = parse_transcripts(layout.transcripts, src, found)
    for vid in sorted(set(segments) | set(labels)):
        features, intervals = labels.get(vid, (np.zeros((0, 7)), np.zeros((0, 2))))
        matched, drops = _label_video(vid, segments.get(vid, []), features, intervals, csd_path.name)
        found.requests += [_request(segment, features[row], layout) for segment, row in matched]
        found.drops += drops
    found.requests.sort(key=lambda request: request.id)
    found.drops.sort(key=lambda drop: drop.id)
    return found


def find_layout(src: Path) -> Layout:
    """The full-release layout (``Raw/...``) or the flattened MESM copy (``MOSEI_Raw/...``).

    ``src`` may be the release root or the ``Raw``/``MOSEI_Raw`` folder itself.
    """
    candidates = [
        Layout(base / "Transcript/Segmented/Combined", base / "Videos/Full/Combined", base / "Audio/Full/WAV_16000")
        for base in (src / "Raw", src)
    ]
    candidates += [
        Layout(base / "Transcript/Combined", base / "Videos/Full/Combined", base / "Audio/WAV_16000")
        for base in (src / "MOSEI_Raw", src)
    ]
    for layout in candidates:
        if layout.transcripts.is_dir():
            return layout
    looked = ", ".join(str(layout.transcripts) for layout in candidates)
    raise FileNotFoundError(f"{src}: not a CMU-MOSEI release (no segmented transcript folder; looked for {looked})")


def find_csd(src: Path) -> Path:
    """``CMU_MOSEI_Labels.csd`` at the release root, else one folder down (its place in the zip varies)."""
    for candidate in [src / CSD_NAME, *sorted(src.glob(f"*/{CSD_NAME}"))]:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{src}: no {CSD_NAME} in this folder or one level down; pass the labels file")


def _load_labels(csd_path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    labels = read_csd(csd_path)
    for vid, (features, _) in labels.items():
        if features.shape[1] <= max(CSD_COLUMNS):
            raise CSDError(
                f"{csd_path}: {vid} has {features.shape[1]} label columns, expected 7 "
                f"(sentiment and six emotions); is this the labels CSD?"
            )
    return labels


def parse_transcripts(folder: Path, src: Path, found: ParseResult) -> dict[str, list[Segment]]:
    """Segments of every ``<vid>.txt`` in ``folder``, by video id; hidden files, bad lines and lines
    that are not UTF-8 are reported in ``found``."""
    return {path.stem: parse_transcript(path, src, found) for path in corpus_text_files(folder, src, found)}


def parse_transcript(path: Path, src: Path, found: ParseResult) -> list[Segment]:
    """Lines ``<vid>___<clip>___<start>___<end>___<text>`` of one file; bad lines become drops.

    The video id is taken from the file name and stripped as a known prefix, because ids and texts may
    both contain underscore runs; the rest is split at most 3 times so the text stays intact.
    """
    vid, rel = path.stem, path.relative_to(src).as_posix()
    segments: list[Segment] = []
    first_line: dict[int, int] = {}
    for number, line in enumerate(read_corpus_lines(path, src, found), start=1):
        if not line.strip():
            continue
        segment, problem = _parse_line(vid, line)
        if segment is not None and segment.clip in first_line:
            problem = f"duplicate clip {segment.clip} (first on line {first_line[segment.clip]})"
        if problem:
            found.drops.append(Drop(f"{rel}:{number}", f"{rel} line {number}: {problem}"))
            continue
        first_line[segment.clip] = number
        segments.append(segment)
    return segments


def _parse_line(vid: str, line: str) -> tuple[Segment | None, str | None]:
    prefix = f"{vid}___"
    if not line.startswith(prefix):
        return None, f"does not start with the file's video id {prefix!r}"
    fields = line[len(prefix) :].split("___", 3)
    if len(fields) != 4:
        return None, "expected <vid>___<clip>___<start>___<end>___<text>"
    clip, start, end, text = fields
    if not (clip.isascii() and clip.isdigit()):
        return None, f"clip number {clip!r} is not a non-negative integer"
    try:
        start_s, end_s = float(start), float(end)
    except ValueError:
        return None, f"times {start!r}, {end!r} are not numbers"
    if not (math.isfinite(start_s) and math.isfinite(end_s) and end_s > max(start_s, 0.0)):
        return None, f"empty or invalid interval [{start}, {end}]"
    return Segment(vid, int(clip), start_s, end_s, text.strip()), None


def _label_video(
    vid: str, segments: list[Segment], features: np.ndarray, intervals: np.ndarray, csd_name: str
) -> tuple[list[tuple[Segment, int]], list[Drop]]:
    """(segment, CSD row) pairs of one video whose labels can be trusted, plus drops for the rest:
    rows whose interval is unusable, segments and rows left unmatched, segments whose row holds a NaN,
    infinite or out-of-range value."""
    rows = intervals.tolist()
    where = [f"{csd_name} row {row} of {vid} [{start}, {end}]" for row, (start, end) in enumerate(rows)]
    problems = {row: interval_problem(start, end) for row, (start, end) in enumerate(rows)}
    drops = [Drop(f"{vid}[row {row}]", f"{where[row]}: {problem}") for row, problem in problems.items() if problem]
    usable = [row for row, problem in problems.items() if problem is None]
    found = match_intervals([(s.start, s.end) for s in segments], [rows[row] for row in usable])
    pairs = {i: usable[j] for i, j in sorted(found.items())}
    drops += [
        Drop(s.id, f"no label row in {csd_name} for {vid} [{s.start}, {s.end}]", expected=True)
        for i, s in enumerate(segments)
        if i not in pairs
    ]
    why = "matches no transcript segment" if segments else "video has no segmented transcript"
    drops += [
        Drop(f"{vid}[row {row}]", f"{where[row]}: {why}", expected=True) for row in usable if row not in pairs.values()
    ]
    labelled = {i: label_problem(features[row]) for i, row in pairs.items()}
    drops += [Drop(segments[i].id, f"{where[pairs[i]]}: {problem}") for i, problem in labelled.items() if problem]
    return [(segments[i], pairs[i]) for i, problem in labelled.items() if problem is None], drops


def match_intervals(segments: list[tuple[float, float]], rows: list[tuple[float, float]]) -> dict[int, int]:
    """segment index -> row index, each used at most once, best pairs first (see MATCH_TOLERANCE).

    Greedy over all candidate pairs sorted by (rank, cost, segment, row), so an exact pair is never
    displaced by an approximate one and the result does not depend on the order of either list.
    """
    candidates = []
    for i, segment in enumerate(segments):
        for j, row in enumerate(rows):
            rank = _match_rank(segment, row)
            if rank is not None:
                candidates.append((*rank, i, j))
    pairs: dict[int, int] = {}
    used: set[int] = set()
    for _, _, i, j in sorted(candidates):
        if i not in pairs and j not in used:
            pairs[i] = j
            used.add(j)
    return pairs


def _match_rank(a: tuple[float, float], b: tuple[float, float]) -> tuple[int, float] | None:
    """(0, deviation) within tolerance (so identical intervals, deviation 0, come first), else
    (1, -overlap) for a large enough overlap, else None."""
    deviation = max(abs(a[0] - b[0]), abs(a[1] - b[1]))
    if deviation <= MATCH_TOLERANCE:
        return 0, deviation
    union = max(a[1], b[1]) - min(a[0], b[0])
    overlap = (min(a[1], b[1]) - max(a[0], b[0])) / union if union > 0 else 0.0
    return (1, -overlap) if overlap >= MIN_OVERLAP else None


def emotion_labels(features: np.ndarray) -> list[int]:
    """Multi-hot in canonical order: an emotion is present iff its CSD score is > 0."""
    return [int(features[column] > 0) for column in CSD_COLUMNS]


def extra_labels(features: np.ndarray) -> dict:
    """The manifest's ``sentiment`` (CSD column 0) and ``emotion_intensity`` (raw scores by canonical
    emotion name) of one CSD row, as Python floats; the row has passed ``label_problem``."""
    return {
        "sentiment": float(features[0]),
        "emotion_intensity": {name: float(features[column]) for name, column in zip(MOSEI_EMOTIONS, CSD_COLUMNS)},
    }


def _request(segment: Segment, features: np.ndarray, layout: Layout) -> ClipRequest:
    """Negative starts (a few CSD/transcript intervals begin before 0 s) are clamped for video and audio."""
    start = max(0.0, segment.start)
    return ClipRequest(
        id=segment.id,
        dataset="mosei",
        label=emotion_labels(features),
        start=start,
        end=segment.end,
        text=segment.text,
        video=layout.videos / f"{segment.vid}.mp4",
        audio=AudioSource(layout.audio / f"{segment.vid}.wav", "full_wav_channel_0", 0, start, segment.end),
        group=segment.vid,
        extra_labels=extra_labels(features),
    )
