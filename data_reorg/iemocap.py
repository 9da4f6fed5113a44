"""IEMOCAP recipe: an ``IEMOCAP_full_release`` folder -> one :class:`ClipRequest` per labelled utterance.

Times and labels come from the consensus summary lines of ``Session*/dialog/EmoEvaluation/<dialog>.txt``;
the text is joined by utterance id from ``Session*/dialog/transcriptions/<dialog>.txt``. Each dialog video
shows both actors side by side, so every request crops the speaker's half of the frame.

The summary line's ``[V, A, D]`` triple becomes the manifest's ``vad``. A line without four fields is
malformed and dropped (which field is which cannot be told). A fourth field that is not three decimal
numbers in [1, 5] (NaN, inf, missing or extra values) leaves the class label intact: the utterance is
kept with ``vad`` None and a :class:`Note` naming the file, line and problem (``reorg.json`` ``warnings``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from data_reorg.manifest import (
    IEMOCAP_CLASSES,
    VAD_DIMENSIONS,
    AudioSource,
    ClipRequest,
    Drop,
    Note,
    ParseResult,
    corpus_text_files,
    read_corpus_lines,
)
from data_reorg.pipeline import RunOptions, RunSummary, reorganize, resolve_source
from data_reorg.shards import Shard
from data_reorg.splits import DEFAULT_RATIOS, SplitSpec, random_split_spec

log = logging.getLogger("data_reorg")

SIDE_RULES = ("mocap", "female-left")
SPLIT_POLICIES = ("random", "mesm", "session")
CROPS = {"L": (0.0, 0.0, 0.5, 1.0), "R": (0.5, 0.0, 0.5, 1.0)}
VAD_RANGE = (1.0, 5.0)  # the consensus triple holds means of 1-5 ratings

_DIALOG = r"Ses0(?P<session>[1-5])(?P<letter>[FM])_(?:impro0[1-8][ab]?|script0[1-3]_[1-3]b?)"
# The speaker letter is the first character of the last "_" token: script dialog ids hold an extra "_".
_UTTERANCE = re.compile(rf"(?P<dialog>{_DIALOG})_(?P<speaker>[FM])\d{{3}}")
_UNLABELLED = re.compile(rf"{_DIALOG}_[FM]XX\d*")
_DECIMAL = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")
_SUMMARY_TIMES = re.compile(r"\[\s*(\d+(?:\.\d*)?)\s*-\s*(\d+(?:\.\d*)?)\s*\]")
# Split at the first "]:" only: the text itself may hold ":" and bracketed tokens such as [LAUGHTER].
_TRANSCRIPT_LINE = re.compile(r"(?P<id>\S+)\s+\[[^\]]*\]:(?P<text>.*)")


@dataclass(frozen=True)
class _Label:
    """One consensus summary line of an EmoEvaluation file, with where it was read."""

    id: str
    code: str
    start: float
    end: float
    where: str
    vad: dict[str, float] | None = None
    vad_problem: str | None = None  # why ``vad`` is None


def prepare_iemocap(
    src: Path,
    out: Path,
    *,
    split: str = "random",
    seed: int = 0,
    ratios: Sequence[float] | str = DEFAULT_RATIOS,
    jobs: int = 1,
    strict: bool = False,
    progress: bool = True,
    classes: Sequence[str] = IEMOCAP_CLASSES,
    side_rule: str = "mocap",
    test_session: str | None = None,
    valid_session: str | None = None,
    shard: Shard | None = None,
    merge: bool = False,
) -> RunSummary:
    """Reorganize the release at ``src`` into clips, manifest and splits under ``out`` (``data-reorg iemocap``).

    ``split``: ``random`` (``seed``, ``ratios``), ``mesm`` (the published MESM lists) or ``session``
    (``test_session`` / ``valid_session`` held out; by default the last session found and the one before).
    Raises FileNotFoundError / ValueError for a missing SRC, an OUT inside SRC or a bad argument,
    StrictModeError under ``strict`` at the first utterance that cannot be kept.
    """
    if split not in SPLIT_POLICIES:
        raise ValueError(f"unknown IEMOCAP split {split!r}; choose one of {SPLIT_POLICIES}")
    src = resolve_source(src, out)
    parsed = parse_release(src, classes=tuple(classes), side_rule=side_rule)
    spec = _split_spec(split, parsed, seed, ratios, test_session, valid_session)
    options = RunOptions(Path(out), jobs=jobs, strict=strict, progress=progress, shard=shard, merge=merge)
    return reorganize(parsed, spec, options)


def _split_spec(
    split: str,
    parsed: ParseResult,
    seed: int,
    ratios: Sequence[float] | str,
    test_session: str | None,
    valid_session: str | None,
) -> SplitSpec:
    if split == "random":
        return random_split_spec(seed, ratios)
    if split == "mesm":
        return SplitSpec("list", list_name="mesm_iemocap")
    sessions = sorted({request.group for request in parsed.requests}, key=int)
    test = test_session or (sessions[-1] if sessions else "5")
    valid = valid_session or next((s for s in reversed(sessions) if s != test), "4")
    return SplitSpec("group", test_groups=(str(test),), valid_groups=(str(valid),))


def parse_release(src: Path, classes: tuple[str, ...] = IEMOCAP_CLASSES, side_rule: str = "mocap") -> ParseResult:
    """Requests for the utterances of ``src`` labelled with one of ``classes``; everything else as drops.

    ``side_rule`` picks the half of the frame that shows the speaker: ``mocap`` puts the actor wearing
    the MoCap markers (speaker letter == session letter) on the left, ``female-left`` the female actor.
    """
    if side_rule not in SIDE_RULES:
        raise ValueError(f"unknown IEMOCAP side rule {side_rule!r}; choose one of {SIDE_RULES}")
    src = Path(src)
    found = ParseResult()
    labels, texts = _read_release(src, found)
    found.drops.extend(
        Drop(item, f"no EmoEvaluation label ({where})", expected=True)
        for item, (_, where) in texts.items()
        if item not in labels
    )
    for label in sorted(labels.values(), key=lambda lab: lab.id):
        if label.code in classes:
            found.requests.append(_request(src, label, texts.get(label.id, ("", ""))[0], side_rule))
            if label.vad_problem:
                found.notes.append(Note(label.where, f"{label.vad_problem}; {label.id} is kept with vad null"))
        else:
            found.drops.append(
                Drop(
                    label.id,
                    f"label {label.code!r} is not one of the classes {','.join(classes)} ({label.where})",
                    expected=True,
                )
            )
    untranscribed = [request.id for request in found.requests if request.id not in texts]
    if untranscribed:
        log.warning(
            "%d labelled IEMOCAP utterances have no transcript line; their texts are empty (e.g. %s)",
            len(untranscribed),
            ", ".join(untranscribed[:5]),
        )
    found.drops.sort(key=lambda drop: drop.id)
    return found


def _read_release(src: Path, found: ParseResult) -> tuple[dict[str, _Label], dict[str, tuple[str, str]]]:
    """Labels by id and (text, file:line) by id over all sessions; refused lines go to ``found``."""
    labels: dict[str, _Label] = {}
    texts: dict[str, tuple[str, str]] = {}
    for session in _session_dirs(src):
        for path in corpus_text_files(session / "dialog" / "EmoEvaluation", src, found):
            _read_emo_evaluation(path, src, labels, found)
            if not (session / "dialog" / "transcriptions" / path.name).is_file():
                log.warning(
                    "%s: no transcription file for this dialog; its texts are left empty", path.relative_to(src)
                )
        for path in corpus_text_files(session / "dialog" / "transcriptions", src, found):
            _read_transcription(path, src, texts, found)
    return labels, texts


def _session_dirs(src: Path) -> list[Path]:
    sessions = sorted(path for path in src.glob("Session[1-5]") if (path / "dialog" / "EmoEvaluation").is_dir())
    if not sessions:
        raise FileNotFoundError(
            f"{src}: no Session<N>/dialog/EmoEvaluation folder; expected an IEMOCAP_full_release folder"
        )
    return sessions


def _read_emo_evaluation(path: Path, src: Path, labels: dict[str, _Label], found: ParseResult) -> None:
    """Add the summary lines of one EmoEvaluation file to ``labels``; annotator lines are not needed."""
    relative = path.relative_to(src).as_posix()
    for number, line in enumerate(read_corpus_lines(path, src, found), start=1):
        if not line.startswith("["):
            continue
        where = f"{relative}:{number}"
        try:
            label = _parse_summary(line, where)
        except ValueError as error:
            found.drops.append(Drop(where, f"malformed EmoEvaluation summary line: {error}"))
            continue
        if not _UTTERANCE.fullmatch(label.id):
            found.drops.append(Drop(label.id, f"utterance id does not match the IEMOCAP id rule ({where})"))
        elif label.id in labels:
            found.drops.append(
                Drop(label.id, f"duplicate EmoEvaluation block ({where}); the one at {labels[label.id].where} is kept")
            )
        else:
            labels[label.id] = label


def _parse_summary(line: str, where: str) -> _Label:
    """``[start - end] TAB id TAB code TAB [v, a, d]`` -> :class:`_Label`; ValueError says what is wrong."""
    fields = [field.strip() for field in line.split("\t") if field.strip()]
    if len(fields) != 4:
        raise ValueError(f"expected 4 TAB-separated fields, got {len(fields)}: {line.strip()!r}")
    times = _SUMMARY_TIMES.fullmatch(fields[0])
    if not times:
        raise ValueError(f"bad time interval {fields[0]!r}")
    start, end = float(times[1]), float(times[2])
    if end <= start:
        raise ValueError(f"interval {fields[0]!r} ends before it starts")
    vad, problem = parse_vad(fields[3])
    return _Label(fields[1], fields[2], start, end, where, vad, problem)


def parse_vad(text: str) -> tuple[dict[str, float] | None, str | None]:
    """``[v, a, d]`` -> ({valence, activation, dominance}, None), or (None, why it cannot be trusted):
    not three comma-separated decimal numbers (NaN, inf, empty, garbage), or one outside VAD_RANGE."""
    if not (text.startswith("[") and text.endswith("]")):
        return None, f"VAD triple {text!r} is not bracketed"
    parts = text[1:-1].split(",")
    if len(parts) != len(VAD_DIMENSIONS):
        return None, f"VAD triple {text!r} does not hold 3 values"
    values = {}
    low, high = VAD_RANGE
    for name, part in zip(VAD_DIMENSIONS, parts):
        if not _DECIMAL.fullmatch(part.strip()):  # float() would also take "nan", "inf", "1_0"
            return None, f"VAD triple {text!r}: {name} {part.strip()!r} is not a decimal number"
        value = float(part)
        if not low <= value <= high:
            return None, f"VAD triple {text!r}: {name} {value} is outside [{low:g}, {high:g}]"
        values[name] = value
    return values, None


def _read_transcription(path: Path, src: Path, texts: dict[str, tuple[str, str]], found: ParseResult) -> None:
    """Add ``id -> (text, file:line)`` for each utterance line of one transcription file; drop the others."""
    relative = path.relative_to(src).as_posix()
    for number, line in enumerate(read_corpus_lines(path, src, found), start=1):
        line = line.strip()
        if not line:
            continue
        where = f"{relative}:{number}"
        match = _TRANSCRIPT_LINE.fullmatch(line)
        item = match["id"] if match else None
        if item and _UTTERANCE.fullmatch(item):
            texts[item] = (match["text"].strip(), where)
        elif item and _UNLABELLED.fullmatch(item):
            found.drops.append(Drop(item, f"unlabelled utterance (XX id) in the transcript ({where})", expected=True))
        else:
            found.drops.append(Drop(where, f"transcript line is not an utterance: {line!r}", expected=True))


def _side(utterance: re.Match, side_rule: str) -> str:
    if side_rule == "mocap":
        return "L" if utterance["speaker"] == utterance["letter"] else "R"
    return "L" if utterance["speaker"] == "F" else "R"


def _request(src: Path, label: _Label, text: str, side_rule: str) -> ClipRequest:
    """The clip request of one kept utterance; media paths follow the release layout from its id."""
    utterance = _UTTERANCE.fullmatch(label.id)
    dialog, session = utterance["dialog"], utterance["session"]
    side = _side(utterance, side_rule)
    channel = 0 if side == "L" else 1
    session_dir = src / f"Session{session}"
    return ClipRequest(
        id=label.id,
        dataset="iemocap",
        label=label.code,
        start=label.start,
        end=label.end,
        text=text,
        video=session_dir / "dialog" / "avi" / "DivX" / f"{dialog}.avi",
        audio=AudioSource(session_dir / "sentences" / "wav" / dialog / f"{label.id}.wav", "sentence_wav"),
        group=session,
        crop=CROPS[side],
        side=side,
        # Dialog wav channels follow the video halves: 0 = left actor, 1 = right actor.
        fallback_audio=AudioSource(
            session_dir / "dialog" / "wav" / f"{dialog}.wav",
            f"dialog_wav_channel_{channel}",
            channel,
            label.start,
            label.end,
        ),
        extra_labels={"vad": label.vad},
    )
