"""``data-reorg stats`` and ``data-reorg verify``: read a reorganized folder back."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import soundfile as sf

from data_reorg.io import read_jsonl
from data_reorg.manifest import IEMOCAP_CLASSES, MOSEI_EMOTIONS, SPLITS
from data_reorg.media import SAMPLE_RATE, MediaError, probe_video
from data_reorg.pipeline import clip_problems
from data_reorg.tables import markdown_table


def class_names(rows: list[dict]) -> tuple[str, ...]:
    """IEMOCAP rows carry a class code; MOSEI rows a multi-hot list in canonical emotion order."""
    if rows and isinstance(rows[0]["label"], list):
        return MOSEI_EMOTIONS
    extra = sorted({row["label"] for row in rows} - set(IEMOCAP_CLASSES))
    return tuple(IEMOCAP_CLASSES) + tuple(extra)


def positives(row: dict, names: tuple[str, ...]) -> list[str]:
    if isinstance(row["label"], list):
        return [name for name, value in zip(names, row["label"]) if value]
    return [row["label"]]


def split_statistics(rows: list[dict]) -> dict:
    """Per split: utterance count, hours, and per class positives (as the MESM paper's Tables 1-2)."""
    names = class_names(rows)
    stats = {}
    for split in SPLITS + ("all",):
        chosen = [row for row in rows if split == "all" or row["split"] == split]
        counts = Counter(name for row in chosen for name in positives(row, names))
        stats[split] = {
            "utterances": len(chosen),
            "hours": round(sum(row["end"] - row["start"] for row in chosen) / 3600, 4),
            "mean_seconds": round(sum(row["end"] - row["start"] for row in chosen) / max(1, len(chosen)), 3),
            "classes": {name: counts.get(name, 0) for name in names},
        }
    return stats


def format_statistics(stats: dict, dropped: list[dict]) -> str:
    names = list(stats["all"]["classes"])
    header = ["split", "utts", "hours", "mean s"] + names
    rows = [
        [
            split,
            entry["utterances"],
            f"{entry['hours']:.3f}",
            f"{entry['mean_seconds']:.2f}",
            *(entry["classes"][name] for name in names),
        ]
        for split, entry in stats.items()
    ]
    reasons = Counter(_reason_kind(row["reason"]) for row in dropped)
    lines = [markdown_table(header, rows), "", f"dropped: {len(dropped)}"]
    lines += [f"  {count:6d}  {reason}" for reason, count in reasons.most_common()]
    return "\n".join(lines)


def _reason_kind(reason: str) -> str:
    """A drop reason without its specifics (file and line in brackets, quoted values, numbers)."""
    text = re.sub(r"\s*\([^)]*\)", "", reason)
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", text)
    text = re.sub(r"^\S*/\S*:\s*", "", text)
    return re.sub(r"(?<![\w.])-?\d+(\.\d+)?(?![\w.])", "N", text)[:90]


def verify(out: Path) -> dict[str, list[str]]:
    """Re-check every manifest clip: files exist, checksums, frame and sample counts, duration.

    Returns {id: [problems]} for clips that fail; an empty dict means everything matches.
    """
    out = Path(out)
    problems: dict[str, list[str]] = defaultdict(list)
    for row in read_jsonl(out / "manifest.jsonl"):
        found = clip_problems(out, row)
        if not found:
            found = _media_problems(out, row)
        if found:
            problems[row["id"]] = found
    return dict(problems)


def _media_problems(out: Path, row: dict) -> list[str]:
    found = []
    try:
        info = probe_video(out / row["video"])
        if info.num_frames != row["num_frames"]:
            found.append(f"video has {info.num_frames} frames, manifest says {row['num_frames']}")
        duration = row["end"] - row["start"]
        if abs(info.num_frames / info.fps - duration) > max(2 / info.fps, 0.05 * duration):
            found.append(f"video lasts {info.num_frames / info.fps:.3f} s, interval is {duration:.3f} s")
    except MediaError as error:
        found.append(str(error))
    audio = sf.info(str(out / row["audio"]))
    if audio.samplerate != SAMPLE_RATE or audio.channels != 1:
        found.append(f"audio is {audio.samplerate} Hz x {audio.channels} ch, expected 16000 Hz mono")
    if audio.frames != row["num_samples"]:
        found.append(f"audio has {audio.frames} samples, manifest says {row['num_samples']}")
    return found


def read_dropped(out: Path) -> list[dict]:
    """``dropped.jsonl`` rows; none when a folder has no such file."""
    path = Path(out) / "dropped.jsonl"
    return read_jsonl(path) if path.exists() else []


def summary_json(out: Path) -> str:
    rows = read_jsonl(Path(out) / "manifest.jsonl")
    dropped = read_dropped(out)
    return json.dumps({"splits": split_statistics(rows), "dropped": len(dropped)}, indent=2)
