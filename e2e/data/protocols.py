"""Evaluation protocols on the data side: which manifest rows form a split (``data.split``, ``data.fold``)
and which label space they are scored in (``data.label_space``).

**Leave-one-session-out cross-validation** (``data.split=session-cv``, IEMOCAP only). Fold ``k`` tests on
every utterance of session ``k`` (both of its actors); the other sessions train, except a fixed
validation slice of them: the :data:`VALID_FRACTION` of their utterances with the smallest sha256 of the
id (at least one). So no test speaker is ever seen in training or validation (each IEMOCAP session has
its own two actors: the split is speaker-independent by construction, and :func:`session_fold` checks
it), the whole held-out session is scored, and validation (early stopping, the per-class thresholds)
never looks at the test session. The manifest's own ``split`` field is ignored under this protocol.

**Shared emotions** (``data.label_space=shared``, the cross-corpus protocol). IEMOCAP and CMU-MOSEI label
three emotions in common, :data:`SHARED_EMOTIONS`; :data:`SHARED_MAPPING` sends each corpus's classes to
them (IEMOCAP ``exc``, excited, counts as ``happy``, as in the usual 4-class IEMOCAP set). IEMOCAP
``neu`` and ``fru`` and MOSEI ``disgust``, ``fear`` and ``surprise`` have no counterpart. Neutral is left
out: MOSEI rates the presence of six emotions and has no neutral class (a segment rated 0 on all six is
"no emotion present", not a rated neutral). An utterance is kept iff it shows at least one shared
emotion; the others are skipped as ``unshared_label``. Labels are multi-hot over the shared emotions
(an IEMOCAP utterance is one-hot; a MOSEI segment may show several) and every emotion is scored
one-vs-rest, as MOSEI is.
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

import torch

from data_reorg.manifest import IEMOCAP_CLASSES, MOSEI_EMOTIONS, load_manifest
from e2e.config import SOURCE_CLIPS, DataConfig, UsageError

STANDARD, SESSION_CV = "standard", "session-cv"
VALID_FRACTION = 0.1
SESSION_CV_VALID = f"{VALID_FRACTION:.0%} of the training sessions' utterances (smallest sha256 of the id)"
# an IEMOCAP utterance id: Ses0<session><letter>_<dialog part(s)>_<speaker><NNN> (CORPUS_FORMATS.md)
_IEMOCAP_ID = re.compile(r"Ses0(?P<session>[1-5])[FM]_.+_(?P<speaker>[FM])\d{3}")

SHARED_EMOTIONS = ("anger", "happy", "sad")
SHARED_MAPPING = {  # corpus class -> shared emotion; None: no counterpart (the utterance counts if another has one)
    "iemocap": {"ang": "anger", "exc": "happy", "fru": None, "hap": "happy", "neu": None, "sad": "sad"},
    "mosei": {"anger": "anger", "disgust": None, "fear": None, "happy": "happy", "sad": "sad", "surprise": None},
}
NATIVE_CLASSES = {"iemocap": IEMOCAP_CLASSES, "mosei": MOSEI_EMOTIONS}


def check_protocol(data: DataConfig) -> None:
    """UsageError when ``data.split`` / ``data.fold`` / ``data.label_space`` do not fit the corpus."""
    if data.split == SESSION_CV:
        if data.dataset != "iemocap" or data.source != SOURCE_CLIPS:
            raise UsageError(
                f"data.split=session-cv is IEMOCAP's leave-one-session-out protocol (data.dataset=iemocap, "
                f"data.source=clips), got data.dataset={data.dataset!r}, data.source={data.source!r}"
            )
        if not 1 <= data.fold <= 5:
            raise UsageError(f"data.split=session-cv needs data.fold, the held-out session 1-5, got {data.fold}")
    elif data.fold != 0:
        raise UsageError(f"data.fold={data.fold} is only for data.split=session-cv (data.split={data.split!r})")
    if data.label_space == "shared" and (data.dataset not in SHARED_MAPPING or data.task != "emotion"):
        raise UsageError(
            f"data.label_space=shared maps the emotion classes of {' and '.join(SHARED_MAPPING)}, "
            f"got data.dataset={data.dataset!r}, data.task={data.task!r}"
        )


def split_rows(data_dir: Path | str, split: str, data: DataConfig) -> list[dict]:
    """The manifest rows of ``split`` under ``data``'s protocol."""
    check_protocol(data)
    if data.split == STANDARD:
        return load_manifest(data_dir, split)
    rows = load_manifest(data_dir)
    assignment = session_fold(rows, data.fold, f"{Path(data_dir) / 'manifest.jsonl'}")
    return [row for row in rows if assignment[row["id"]] == split]


def iemocap_speaker(utterance_id: str, source: str = "manifest") -> tuple[str, str]:
    """(session "1"-"5", speaker "Ses0<k><F|M>") of an IEMOCAP utterance id; UsageError naming it otherwise."""
    match = _IEMOCAP_ID.fullmatch(utterance_id)
    if match is None:
        raise UsageError(f"{source}: {utterance_id!r} is not an IEMOCAP utterance id (Ses0<k><F|M>_..._<F|M><NNN>)")
    session = match["session"]
    return session, f"Ses0{session}{match['speaker']}"


def session_fold(rows: list[dict], fold: int, source: str = "manifest") -> dict[str, str]:
    """Utterance id -> ``train`` / ``valid`` / ``test`` of leave-one-session-out fold ``fold`` (module
    docstring); UsageError when the rows have no utterance of session ``fold``."""
    sessions = {row["id"]: iemocap_speaker(row["id"], source)[0] for row in rows}
    held_out = str(fold)
    if held_out not in sessions.values():
        found = ", ".join(sorted(set(sessions.values()))) or "none"
        raise UsageError(f"{source}: session-cv fold {fold} has no utterance of session {fold} (sessions: {found})")
    training = sorted((i for i, session in sessions.items() if session != held_out), key=_id_hash)
    valid = set(training[: max(1, math.ceil(VALID_FRACTION * len(training)))]) if training else set()
    assignment = {
        i: "test" if session == held_out else "valid" if i in valid else "train" for i, session in sessions.items()
    }
    check_speaker_independent(assignment, source)
    return assignment


def sessions_in(rows: list[dict], source: str = "manifest") -> list[int]:
    """The IEMOCAP sessions the rows hold, in order (the folds session-cv can run)."""
    return sorted({int(iemocap_speaker(row["id"], source)[0]) for row in rows})


def check_speaker_independent(assignment: dict[str, str], source: str = "manifest") -> None:
    """ValueError when a speaker has utterances in ``test`` and in ``train`` or ``valid``."""
    speakers: dict[str, set[str]] = {}
    for utterance_id, split in assignment.items():
        speakers.setdefault("test" if split == "test" else "fit", set()).add(iemocap_speaker(utterance_id, source)[1])
    shared = speakers.get("test", set()) & speakers.get("fit", set())
    if shared:
        raise ValueError(f"{source}: speakers {sorted(shared)} are in the test split and in train/valid")


def _id_hash(utterance_id: str) -> str:
    return hashlib.sha256(utterance_id.encode()).hexdigest()


def class_names(dataset: str, label_space: str) -> tuple[str, ...]:
    """The emotion classes a run on ``dataset`` predicts under ``label_space``."""
    return SHARED_EMOTIONS if label_space == "shared" else NATIVE_CLASSES[dataset]


def shared_label(dataset: str, raw) -> tuple[torch.Tensor | None, tuple[str, str] | None]:
    """(multi-hot label over :data:`SHARED_EMOTIONS`, None) of a manifest ``label`` of ``dataset``, or
    (None, (reason, message)): ``bad_label`` for a label of no class, ``unshared_label`` for one showing
    no shared emotion."""
    native = NATIVE_CLASSES[dataset]
    if dataset == "iemocap" and raw in native:
        present = [raw]
    elif dataset == "mosei" and isinstance(raw, list) and len(raw) == len(native) and set(raw) <= {0, 1}:
        present = [name for name, value in zip(native, raw) if value == 1]
    else:
        return None, ("bad_label", f"label {raw!r} is not a {dataset} label")
    shared = {SHARED_MAPPING[dataset][name] for name in present} - {None}
    if not shared:
        return None, ("unshared_label", f"label {raw!r} shows none of {', '.join(SHARED_EMOTIONS)}")
    return torch.tensor([float(name in shared) for name in SHARED_EMOTIONS]), None


def mapping_record() -> dict:
    """The shared label space as results and tables record it."""
    return {"emotions": list(SHARED_EMOTIONS), "mapping": SHARED_MAPPING, "kept": "at least one shared emotion"}
