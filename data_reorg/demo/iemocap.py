"""The demo ``IEMOCAP_full_release`` tree: dialog AVIs and wavs, sentence wavs, transcripts, EmoEvaluation."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_reorg.demo.assets import Assets
from data_reorg.demo.cues import CLASSES, seeded_rng
from data_reorg.demo.video import Shot, Track, frame_index, random_background, random_motion, write_video
from data_reorg.demo.voices import class_speech, class_text
from data_reorg.io import atomic_path, write_text_atomic
from data_reorg.media import SAMPLE_RATE, write_wav
from data_reorg.splits import load_split_lists

IEMOCAP_FPS = 30
HALF_W, HALF_H = 360, 480
KEPT_PER_DIALOG = 24  # 4 per class
IEMOCAP_DIALOGS = (
    "Ses01F_impro01",
    "Ses01F_script01_1",
    "Ses02M_impro03",
    "Ses02M_script02_2",
    "Ses03F_impro03",
    "Ses03M_impro05a",
)
DROP_CODES = {
    "Ses01F_impro01": ("xxx",),
    "Ses02M_script02_2": ("sur", "xxx"),
    "Ses03F_impro03": ("xxx",),
    "Ses03M_impro05a": ("fea",),
}
# Traps placed on the k-th kept utterance (time order) of a dialog.
SPECIAL_TEXT = {
    ("Ses01F_script01_1", 3): "[LAUGHTER] {}",
    ("Ses03M_impro05a", 9): "Note: {}",
    ("Ses02M_script02_2", 7): "At the caf\xe9, {}",
}
LATIN1_DIALOG = "Ses02M_script02_2"
MISSING_WAV = ("Ses02M_impro03", 11)
FACELESS_START = {("Ses01F_script01_1", 2): 4, ("Ses03M_impro05a", 5): 4}  # blank frames at the start
LISTENER_AWAY = ("Ses02M_impro03", "Ses03F_impro03")
UNLABELLED_ID = "Ses03F_impro03_FXX0"
NON_UTTERANCE = ("Ses01F_script01_1", "BREAK [GARBAGE]")
JUNK_DIALOG = "Ses01F_impro01"
CATEGORY = {
    "ang": "Anger",
    "exc": "Excited",
    "fru": "Frustration",
    "hap": "Happiness",
    "neu": "Neutral",
    "sad": "Sadness",
    "sur": "Surprise",
    "fea": "Fear",
    "oth": "Other",
}
VAD_CENTRE = {
    "ang": (2, 4, 4),
    "exc": (4, 4, 3),
    "fru": (2, 3, 3),
    "hap": (4, 3, 3),
    "neu": (3, 2, 3),
    "sad": (2, 2, 2),
    "sur": (3, 4, 3),
    "fea": (2, 4, 2),
    "xxx": (3, 3, 3),
}


@dataclass
class _Utterance:
    id: str
    cue: str  # the class whose face, voice and words the media carry
    code: str  # EmoEvaluation code: the cue, or a code outside the six classes
    start: float = 0.0
    end: float = 0.0
    text: str = ""

    @property
    def speaker(self) -> str:
        return self.id.rsplit("_", 1)[1][0]


@dataclass
class _Dialog:
    name: str
    utterances: list[_Utterance]
    num_frames: int

    @property
    def session(self) -> int:
        return int(self.name[4])

    @property
    def letter(self) -> str:
        return self.name[5]

    def channel(self, speaker: str) -> int:
        """0 = left half / first wav channel: the actor wearing the MoCap markers (session letter)."""
        return 0 if speaker == self.letter else 1


def build_iemocap(root: Path, assets: Assets, seed: int) -> dict:
    """Write the IEMOCAP tree under ``root``; returns its part of the truth file."""
    listed = _mesm_iemocap_ids()
    truth: dict = {
        "classes": {},
        "dropped": {},
        "dialogs": {},
        "edge_cases": {
            "junk_files": [],
            "non_utterance_lines": {},
            "missing_sentence_wavs": [],
            "texts": {},
            "faceless_speaker_frames": {},
            "listener_away": {},
            "latin1_files": [],
            "overlapping_pairs": [],
            "unlabelled_transcript_ids": [],
        },
    }
    for name in IEMOCAP_DIALOGS:
        dialog = plan_dialog(name, listed, seed, assets.filler)
        _write_dialog(root, dialog, assets, seed, truth)
    truth["dropped"].update(
        {
            item: "unlabelled (XX id): a transcript line without an EmoEvaluation block"
            for item in truth["edge_cases"]["unlabelled_transcript_ids"]
        }
    )
    _write_iemocap_docs(root, truth["dialogs"])
    return truth


def _mesm_iemocap_ids() -> dict[str, list[str]]:
    by_dialog: dict[str, list[str]] = {}
    for ids in load_split_lists("mesm_iemocap").values():
        for item in ids:
            by_dialog.setdefault(item.rsplit("_", 1)[0], []).append(item)
    return by_dialog


def plan_dialog(name: str, listed: dict[str, list[str]], seed: int, filler: list[str]) -> _Dialog:
    """Ids, hidden classes, timeline and texts of one dialog (no media): pure in ``seed``."""
    rng = seeded_rng(seed, "iemocap", name)
    kept, dropped = _dialog_ids(name, listed[name])
    cues = rng.permutation(np.repeat(CLASSES, KEPT_PER_DIALOG // len(CLASSES)))
    utterances = [_Utterance(item, str(cue), str(cue)) for item, cue in zip(kept, cues)]
    utterances += [_Utterance(item, str(rng.choice(CLASSES)), code) for item, code in dropped]
    utterances.sort(key=lambda u: (int(u.id[-3:]), u.speaker))
    end = _timeline(utterances, rng)
    for utterance in utterances:
        utterance.text = class_text(rng, utterance.cue, filler)
    return _Dialog(name, utterances, math.ceil((end + 0.4) * IEMOCAP_FPS))


def _dialog_ids(name: str, listed: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """The first KEPT_PER_DIALOG MESM ids in turn order; dropped ones take turn numbers the lists lack.

    The MESM lists hold exactly the six-class utterances, so a real turn missing from them carries
    another code in the real corpus.
    """
    turns = sorted((int(item[-3:]), item[-4]) for item in listed)[:KEPT_PER_DIALOG]
    kept = [f"{name}_{speaker}{number:03d}" for number, speaker in turns]
    taken = {item[-4:] for item in listed}
    dropped = []
    for k, code in enumerate(DROP_CODES.get(name, ())):
        speaker = "FM"[k % 2]
        number = next(n for n in range(1000) if f"{speaker}{n:03d}" not in taken)
        taken.add(f"{speaker}{number:03d}")
        dropped.append((f"{name}_{speaker}{number:03d}", code))
    return kept, dropped


def _timeline(utterances: list[_Utterance], rng: np.random.Generator) -> float:
    """Short turns (1.0-1.8 s); a change of speaker often overlaps the previous turn, one actor never
    overlaps themself. Returns the last end time."""
    last_end = {"F": 0.0, "M": 0.0}
    previous, clock = None, rng.uniform(0.2, 0.6)
    for utterance in utterances:
        if previous is not None:
            gap = rng.uniform(-0.45, 0.2) if utterance.speaker != previous.speaker else rng.uniform(0.05, 0.2)
            clock = max(previous.end + gap, last_end[utterance.speaker] + 0.1)
        utterance.start = round(clock, 4)
        utterance.end = round(clock + rng.uniform(1.0, 1.8), 4)
        last_end[utterance.speaker] = utterance.end
        previous = utterance
    return max(u.end for u in utterances)


def _write_dialog(root: Path, dialog: _Dialog, assets: Assets, seed: int, truth: dict) -> None:
    rng = seeded_rng(seed, "iemocap-media", dialog.name)
    kept = [u for u in dialog.utterances if u.code in CLASSES]
    edges = truth["edge_cases"]
    for k, utterance in enumerate(kept):
        template = SPECIAL_TEXT.get((dialog.name, k))
        if template:
            utterance.text = template.format(utterance.text)
            edges["texts"][utterance.id] = utterance.text
    session = root / f"Session{dialog.session}"
    stereo = _dialog_audio(dialog, assets, rng)
    _write_sentences(session / "sentences" / "wav" / dialog.name, dialog, stereo, kept, edges)
    write_wav(session / "dialog" / "wav" / f"{dialog.name}.wav", stereo)
    tracks = _dialog_tracks(dialog, assets, rng, kept, edges)
    write_video(
        session / "dialog" / "avi" / "DivX" / f"{dialog.name}.avi", tracks, dialog.num_frames, IEMOCAP_FPS, "DIVX"
    )
    _write_dialog_texts(root, session, dialog, rng, edges)
    truth["classes"].update({u.id: u.cue for u in kept})
    truth["dropped"].update(
        {
            u.id: f"emotion code {u.code} is not one of the six classes"
            for u in dialog.utterances
            if u.code not in CLASSES
        }
    )
    truth["dialogs"][dialog.name] = {
        "session": dialog.session,
        "frames": dialog.num_frames,
        "left_speaker": dialog.letter,
        "utterances": len(dialog.utterances),
    }
    edges["overlapping_pairs"] += _overlaps(dialog.utterances)


def _overlaps(utterances: list[_Utterance]) -> list[list[str]]:
    return [
        [a.id, b.id]
        for i, a in enumerate(utterances)
        for b in utterances[i + 1 :]
        if b.start < a.end and a.start < b.end
    ]


def _dialog_audio(dialog: _Dialog, assets: Assets, rng: np.random.Generator) -> np.ndarray:
    """(samples, 2): each actor's speech on their channel over a noise floor, plus 5 % crosstalk."""
    num_samples = round(dialog.num_frames / IEMOCAP_FPS * SAMPLE_RATE)
    speech = np.zeros((num_samples, 2), np.float32)
    for utterance in dialog.utterances:
        first, stop = round(utterance.start * SAMPLE_RATE), round(utterance.end * SAMPLE_RATE)
        speech[first:stop, dialog.channel(utterance.speaker)] += class_speech(
            assets.voices, utterance.cue, stop - first, rng
        )
    noise = rng.normal(0, 0.003, speech.shape).astype(np.float32)
    return speech + 0.05 * speech[:, ::-1] + noise


def _write_sentences(folder: Path, dialog: _Dialog, stereo: np.ndarray, kept: list[_Utterance], edges: dict) -> None:
    """One pre-cut mono wav per utterance (the speaker's channel), except the one left missing."""
    missing = kept[MISSING_WAV[1]].id if dialog.name == MISSING_WAV[0] else None
    for utterance in dialog.utterances:
        if utterance.id == missing:
            edges["missing_sentence_wavs"].append(utterance.id)
            continue
        first, stop = round(utterance.start * SAMPLE_RATE), round(utterance.end * SAMPLE_RATE)
        write_wav(folder / f"{utterance.id}.wav", stereo[first:stop, dialog.channel(utterance.speaker)])


def _dialog_tracks(
    dialog: _Dialog, assets: Assets, rng: np.random.Generator, kept: list[_Utterance], edges: dict
) -> list[Track]:
    """Left and right halves: each actor rests (one face per actor and session) and shows the class face
    of each of their utterances while speaking."""
    tracks = []
    for speaker in (dialog.letter, "M" if dialog.letter == "F" else "F"):
        actor = 2 * (dialog.session - 1) + (speaker == "M")
        resting = assets.resting_faces[actor % len(assets.resting_faces)]
        track = Track(
            random_background(rng, HALF_W, HALF_H),
            IEMOCAP_FPS,
            resting,
            random_motion(rng, HALF_W / 2, HALF_H / 2, 1.0),
        )
        for utterance in dialog.utterances:
            if utterance.speaker == speaker:
                track.add(
                    utterance.start,
                    utterance.end,
                    assets.class_face(utterance.cue, rng),
                    random_motion(rng, HALF_W / 2, HALF_H / 2, 1.0),
                )
        tracks.append(track)
    for k, utterance in enumerate(kept):
        blank = FACELESS_START.get((dialog.name, k))
        if blank:
            track = tracks[dialog.channel(utterance.speaker)]
            first = frame_index(utterance.start, IEMOCAP_FPS)
            track.shots.append(Shot(first, first + blank, None))
            edges["faceless_speaker_frames"][utterance.id] = blank
    if dialog.name in LISTENER_AWAY:
        _turn_away(dialog, tracks[1], edges)
    return tracks


def _turn_away(dialog: _Dialog, track: Track, edges: dict) -> None:
    """Blank the right half for up to 1 s in the first long enough pause of the right actor."""
    own = [u for u in dialog.utterances if dialog.channel(u.speaker) == 1]
    for before, after in zip(own, own[1:]):
        if after.start - before.end >= 0.6:
            start = before.end + 0.1
            end = round(min(after.start - 0.1, start + 1.0), 4)
            track.add(start, end, None)
            edges["listener_away"][dialog.name] = [round(start, 4), end]
            return


def _write_dialog_texts(root: Path, session: Path, dialog: _Dialog, rng: np.random.Generator, edges: dict) -> None:
    folder = session / "dialog"
    rel = folder.relative_to(root).as_posix()
    lines = [f"{u.id} [{u.start:08.4f}-{u.end:08.4f}]: {u.text}" for u in dialog.utterances]
    if UNLABELLED_ID.startswith(dialog.name + "_"):
        anchor = dialog.utterances[len(lines) // 2].start
        lines.insert(len(lines) // 2 + 1, f"{UNLABELLED_ID} [{anchor:08.4f}-{anchor + 0.6:08.4f}]: Mm-hmm.")
        edges["unlabelled_transcript_ids"].append(UNLABELLED_ID)
    if dialog.name == NON_UTTERANCE[0]:
        lines.insert(5, NON_UTTERANCE[1])
        edges["non_utterance_lines"][f"{rel}/transcriptions/{dialog.name}.txt:6"] = NON_UTTERANCE[1]
    transcript = "".join(line + "\n" for line in lines)
    encoding = "latin-1" if dialog.name == LATIN1_DIALOG else "ascii"
    with atomic_path(folder / "transcriptions" / f"{dialog.name}.txt") as tmp:
        tmp.write_bytes(transcript.encode(encoding))
    if encoding == "latin-1":
        edges["latin1_files"].append(f"{rel}/transcriptions/{dialog.name}.txt")
    _write_evaluations(folder / "EmoEvaluation", dialog, rng)
    if dialog.name == JUNK_DIALOG:
        junk = folder / "EmoEvaluation" / f"._{dialog.name}.txt"
        with atomic_path(junk) as tmp:
            tmp.write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(range(256)))
        edges["junk_files"].append(junk.relative_to(root).as_posix())


def _write_evaluations(folder: Path, dialog: _Dialog, rng: np.random.Generator) -> None:
    """The consensus file and its Categorical/Attribute companions (annotator E2) for one dialog."""
    blocks, categorical, attribute = [], [], []
    for utterance in dialog.utterances:
        votes = _votes(utterance.code, rng)
        scores = [_vad(utterance.code, rng) for _ in range(3)]
        blocks.append(_emo_block(utterance, votes, scores))
        e2 = "Neutral state" if votes[0] == "Neutral" else votes[0]
        categorical.append(f"{utterance.id} :{e2};")
        val, act, dom = _vad(utterance.code, rng)
        attribute.append(f"{utterance.id} :act {act}; :val {val}; :dom {dom};")
    header = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"
    write_text_atomic(folder / f"{dialog.name}.txt", header + "\n".join(blocks))
    write_text_atomic(folder / "Categorical" / f"{dialog.name}_e2_cat.txt", "\n".join(categorical) + "\n")
    write_text_atomic(folder / "Attribute" / f"{dialog.name}_e2_atr.txt", "\n".join(attribute) + "\n")


def _votes(code: str, rng: np.random.Generator) -> list[str]:
    """Three external votes: a majority for a real code, three different categories for ``xxx``."""
    others = [name for key, name in CATEGORY.items() if key != code]
    if code == "xxx":
        return [str(vote) for vote in rng.choice(others, size=3, replace=False)]
    votes = [CATEGORY[code]] * 3
    if rng.random() < 0.4:
        votes[rng.integers(3)] = str(rng.choice(others))
    return votes


def _vad(code: str, rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-1, 2), 1, 5)) for c in VAD_CENTRE[code])


def _emo_block(utterance: _Utterance, votes: list[str], scores: list[tuple[int, int, int]]) -> str:
    """Summary line (single TABs, 4 decimals) then C- and A- lines; the summary VAD averages E3 and E4."""
    mean = [sum(score[axis] for score in scores[:2]) / 2 for axis in range(3)]
    self_rater = f"{utterance.speaker}1"
    lines = [
        f"[{utterance.start:.4f} - {utterance.end:.4f}]\t{utterance.id}\t{utterance.code}\t"
        f"[{mean[0]:.4f}, {mean[1]:.4f}, {mean[2]:.4f}]"
    ]
    lines += [f"C-E{n}:\t{vote};\t()" for n, vote in zip((2, 3, 4), votes)]
    lines.append(f"C-{self_rater}:\t{votes[0]};\t(demo self-rating)")
    for rater, (val, act, dom) in zip(("E3", "E4", self_rater), scores):
        lines.append(f"A-{rater}:\tval {val}; act {act}; dom  {dom};\t()")
    return "\n".join(lines) + "\n"


def _write_iemocap_docs(root: Path, dialogs: dict) -> None:
    write_text_atomic(
        root / "README.txt",
        "Synthetic miniature of IEMOCAP_full_release, built by data_reorg.demo for tests and\n"
        "demos. Same layout and file formats as the real release; faces from scikit-image\n"
        "(LFW subset) and matplotlib, speech from pyannote-audio's sample. Not real data.\n",
    )
    lines = [f"{name}\t{info['frames'] / IEMOCAP_FPS:.4f}" for name, info in sorted(dialogs.items())]
    write_text_atomic(root / "Documentation" / "timeinfo.txt", "\n".join(lines) + "\n")
