"""The one manifest format that every later stage reads, and the requests recipes hand to the cutter.

A recipe (``iemocap``, ``mosei``) parses its corpus into :class:`ClipRequest` objects (what to cut and
how to label it) and :class:`Drop` objects (what it refused, with the reason). The pipeline cuts the
requests into ``OUT/video/<id>.mp4`` and ``OUT/audio/<id>.wav`` and writes one manifest row per kept
utterance with the fields of :data:`MANIFEST_FIELDS`, then the optional label fields of
:data:`EXTRA_LABEL_FIELDS` that its corpus has:

* ``sentiment`` (CMU-MOSEI): float in [-3, 3], CSD column 0 as stored (mean of the raters).
* ``emotion_intensity`` (CMU-MOSEI): ``{"anger": x, "disgust": x, "fear": x, "happy": x, "sad": x,
  "surprise": x}``, the raw CSD scores in [0, 3], keys in :data:`MOSEI_EMOTIONS` order (``label`` is
  these scores binarized at > 0). A segment whose CSD row holds any NaN, infinite or out-of-range
  value is dropped as a whole, so both fields are always numbers.
* ``vad`` (IEMOCAP): ``{"valence": v, "activation": a, "dominance": d}``, the consensus means in
  [1, 5] from the EmoEvaluation summary line, or ``null`` when that line's triple is malformed, NaN or
  out of range: the emotion label is still good, so the utterance is kept and the run's ``reorg.json``
  ``warnings`` name the file and line.

A field is absent from rows of the other corpus and from manifests written before it existed;
:func:`load_manifest` reads those as they are, and a stage that needs a field checks for it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from data_reorg.io import read_jsonl, read_lines_lenient

# ``audio_source`` was added last: manifests written before it lack it, and every reader copes.
MANIFEST_FIELDS = (
    "id",
    "dataset",
    "split",
    "label",
    "start",
    "end",
    "text",
    "video",
    "audio",
    "side",
    "fps",
    "num_frames",
    "num_samples",
    "sha256",
    "audio_source",
)
SPLITS = ("train", "valid", "test")
IEMOCAP_CLASSES = ("ang", "exc", "fru", "hap", "neu", "sad")
MOSEI_EMOTIONS = ("anger", "disgust", "fear", "happy", "sad", "surprise")
VAD_DIMENSIONS = ("valence", "activation", "dominance")
# Optional manifest fields after MANIFEST_FIELDS, in this order (see the module docstring).
EXTRA_LABEL_FIELDS = ("sentiment", "emotion_intensity", "vad")


@dataclass(frozen=True)
class AudioSource:
    """Where an utterance's audio comes from: a file, one channel of it, and an optional interval.

    ``name`` is what the manifest's ``audio_source`` records when this source is used, e.g.
    ``sentence_wav`` or ``dialog_wav_channel_1``.
    """

    path: Path
    name: str
    channel: int = 0
    start: float | None = None
    end: float | None = None


@dataclass(frozen=True)
class ClipRequest:
    """One utterance a recipe decided to keep, before cutting.

    ``group`` names the split unit for grouped splits (IEMOCAP session number, MOSEI video id).
    ``crop`` = (x, y, w, h) as fractions of the frame, e.g. (0, 0, 0.5, 1) = left half; None = whole frame.
    ``fallback_audio`` is tried when ``audio`` is missing or unreadable.
    ``extra_labels``: the row's optional label fields (keys from :data:`EXTRA_LABEL_FIELDS`).
    """

    id: str
    dataset: str
    label: str | list[int]
    start: float
    end: float
    text: str
    video: Path
    audio: AudioSource
    group: str
    crop: tuple[float, float, float, float] | None = None
    side: str | None = None
    fallback_audio: AudioSource | None = None
    extra_labels: dict = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.extra_labels) - set(EXTRA_LABEL_FIELDS))
        if unknown:
            raise ValueError(f"{self.id}: unknown extra label fields {unknown}; known: {EXTRA_LABEL_FIELDS}")

    def fingerprint(self) -> str:
        """Changes whenever anything that decides the clip's content or its ``label`` changes.

        ``extra_labels`` are left out: they change no clip file, and the manifest row takes them from
        the request on every run, so a rerun over an output written before they existed reuses its
        clips (same fingerprint as then) and still writes them.
        """
        payload = asdict(self)
        del payload["extra_labels"]
        payload["video"] = str(self.video)
        return hashlib.sha256(json.dumps(payload, default=str, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Drop:
    """An item not kept. ``expected`` marks exclusions by design that every real copy of the corpus has
    (a class outside the set, an unlabelled ``XX`` id, a CSD row without a segment): ``--strict`` stops
    only at the others (malformed lines, unreadable media)."""

    id: str
    reason: str
    expected: bool = False

    def row(self) -> dict:
        return {"id": self.id, "reason": self.reason}


@dataclass(frozen=True)
class Note:
    """Something read with a fallback that the run's outputs must show (``reorg.json`` ``warnings``)."""

    where: str
    warning: str

    def row(self) -> dict:
        return {"where": self.where, "warning": self.warning}


@dataclass
class ParseResult:
    """What a recipe's parser returns: requests to cut, everything it refused, and its fallbacks."""

    requests: list[ClipRequest] = field(default_factory=list)
    drops: list[Drop] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)


def corpus_text_files(folder: Path, src: Path, found: ParseResult) -> list[Path]:
    """The ``.txt`` files directly in ``folder`` (none if it is absent): no sub-folders, and no hidden
    files (macOS ``._*`` resource forks, other dot-files), each of which gets an expected drop row."""
    if not folder.is_dir():
        return []
    files = []
    for path in sorted(entry for entry in folder.iterdir() if entry.is_file()):
        if path.name.startswith("."):
            rel = path.relative_to(src).as_posix()
            found.drops.append(
                Drop(rel, f"{rel}: hidden file skipped (macOS resource fork or other dot-file)", expected=True)
            )
        elif path.suffix == ".txt":
            files.append(path)
    return files


def read_corpus_lines(path: Path, src: Path, found: ParseResult) -> list[str]:
    """The lines of a corpus text file; each line that is not UTF-8 (decoded as latin-1) adds a note."""
    lines, fallbacks = read_lines_lenient(path)
    rel = path.relative_to(src).as_posix()
    found.notes.extend(Note(f"{rel}:{number}", "not valid UTF-8; decoded as latin-1") for number in fallbacks)
    return lines


def load_manifest(data_dir: Path | str, split: str | None = None) -> list[dict]:
    """Manifest rows of ``data_dir`` (optionally one split), with ``video``/``audio`` made absolute.

    Rows are returned with the fields they were written with: the optional ones
    (:data:`EXTRA_LABEL_FIELDS`, ``audio_source``) may be absent, and ``vad`` may be None.
    """
    data_dir = Path(data_dir)
    rows = read_jsonl(data_dir / "manifest.jsonl")
    for row in rows:
        row["video"] = str(data_dir / row["video"])
        row["audio"] = str(data_dir / row["audio"])
    return [row for row in rows if split is None or row["split"] == split]
