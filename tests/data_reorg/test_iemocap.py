"""IEMOCAP recipe: parser edge cases on generated release trees, and one end-to-end cut of a tiny corpus.

Fixture lines copy the real file formats: TAB-separated summary
lines with annotator lines after them, zero-padded transcript times without spaces around "-".
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile as sf

from data_reorg.iemocap import SIDE_RULES, parse_release, parse_vad
from data_reorg.io import read_jsonl
from data_reorg.manifest import MANIFEST_FIELDS, SPLITS, VAD_DIMENSIONS
from data_reorg.media import decodable_frames
from data_reorg.pipeline import RunOptions, reorganize
from data_reorg.report import verify
from data_reorg.splits import SplitSpec

HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"
VAD = "[2.5000, 2.5000, 2.5000]"
F000_BLOCK = (
    "[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]\n"
    "C-E2:\tNeutral;\t()\n"
    "C-E3:\tNeutral;\t()\n"
    "C-E4:\tNeutral;\t()\n"
    "C-F1:\tNeutral;\t(curious)\n"
    "A-E3:\tval 3; act 2; dom  2;\t()\n"
    "A-E4:\tval 2; act 3; dom  3;\t(mildly aggravated but staying polite, attitude)\n"
    "A-F1:\tval 3; act 2; dom  1;\t()\n\n"
)


def summary(start: str, end: str, item: str, code: str, vad: str = VAD) -> str:
    return f"[{start} - {end}]\t{item}\t{code}\t{vad}\n"


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def emo(src: Path, dialog: str, body: str | bytes) -> Path:
    session = f"Session{dialog[4]}"
    head = HEADER.encode() if isinstance(body, bytes) else HEADER
    return write(src / session / "dialog" / "EmoEvaluation" / f"{dialog}.txt", head + body)


def transcript(src: Path, dialog: str, body: str | bytes) -> Path:
    return write(src / f"Session{dialog[4]}" / "dialog" / "transcriptions" / f"{dialog}.txt", body)


def line_of(path: Path, needle: str) -> str:
    """``<path relative to the release>:<line number>`` of the first line of ``path`` holding ``needle``."""
    lines = path.read_bytes().decode("latin-1").splitlines()
    number = next(i for i, line in enumerate(lines, start=1) if needle in line)
    release = next(parent for parent in path.parents if parent.name == "IEMOCAP_full_release")
    return f"{path.relative_to(release).as_posix()}:{number}"


# ----------------------------------------------------------------------------------------------- parser


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    """A text-only release: Session1 impro, Session3 impro05a/b (Ses03M), Session5 script dialogs."""
    src = tmp_path_factory.mktemp("parser") / "IEMOCAP_full_release"
    emo(
        src,
        "Ses01F_impro01",
        (
            F000_BLOCK.replace("attitude)", "attitude, caf\xe9)").encode("latin-1")
            + (
                summary("7.5712", "10.4750", "Ses01F_impro01_M000", "fru", "[1.5000, 4.0000, 4.5000]")
                + "C-E1:\tFrustration;\tAnger;\t()\n\n"
                + summary("10.0100", "11.3825", "Ses01F_impro01_F001", "xxx")
                + summary("12.5000", "14.0000", "Ses01F_impro01_M001", "sur")
                + summary("14.5000", "15.0000", "Ses01F_impro01_F002", "fea")
                + summary("15.1000", "17.0000", "Ses01F_impro01_M002", "exc")
                + summary("17.5000", "18.0000", "Ses01F_impro01_F003", "hap")
                + "[18.5000 - 19.0000]\tSes01F_impro01_F004\tneu\n"
                + summary("19.5000", "20.0000", "Ses01F_impro09_F000", "ang")
            ).encode()
        ),
    )
    transcript(
        src,
        "Ses01F_impro01",
        (
            "Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.\n"
            "Ses01F_impro01_M000 [007.5712-010.4750]: Do you have your forms?\n"
            "Ses01F_impro01_F001 [010.0100-011.3825]: Yeah.\n"
            "Ses01F_impro01_M002 [015.1000-017.0000]: Well: the caf\xe9 said [LAUGHTER]: no.\n"
            "Ses01F_impro01_MXX0 [019.1000-019.4000]: [BREATHING]\n"
            "M: a note without times\n"
            "Ses01F_impro01_F009 [021.0000-022.0000]: Nobody labelled me.\n"
        ).encode("latin-1"),
    )
    evaluation = src / "Session1" / "dialog" / "EmoEvaluation"
    # macOS resource forks and per-annotator sub-folders: a parser that reads them gains F099 / impro02.
    write(
        evaluation / "._Ses01F_impro01.txt",
        b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        \n"
        + summary("1.0000", "2.0000", "Ses01F_impro01_F099", "neu").encode(),
    )
    write(
        src / "Session1" / "dialog" / "transcriptions" / "._Ses01F_impro01.txt",
        b"\x00\x05\x16\x07Ses01F_impro01_F003 [017.5000-018.0000]: junk text\n",
    )
    write(
        evaluation / "Categorical" / "Ses01F_impro01_e2_cat.txt",
        "Ses01F_impro01_F000 :Neutral state;\nSes01F_impro01_M000 :Frustration; Anger;\n",
    )
    write(evaluation / "Attribute" / "Ses01F_impro01_e2_atr.txt", "Ses01F_impro01_F000 :act 4; :val 3; :dom 2;\n")
    write(
        evaluation / "Self-evaluation" / "Ses01F_impro02.txt",
        HEADER + summary("1.0000", "2.0000", "Ses01F_impro02_F000", "neu"),
    )

    for dialog, codes in (("Ses03M_impro05a", ("ang", "sad")), ("Ses03M_impro05b", ("neu", "hap"))):
        emo(
            src,
            dialog,
            summary("1.0000", "2.5000", f"{dialog}_M000", codes[0])
            + summary("2.0000", "3.0000", f"{dialog}_F000", codes[1]),
        )
    transcript(
        src,
        "Ses03M_impro05a",
        "Ses03M_impro05a_M000 [001.0000-002.5000]: Hi.\nSes03M_impro05a_F000 [002.0000-003.0000]: Hello.\n",
    )
    transcript(src, "Ses03F_impro06", "Ses03F_impro06_FXX0 [004.0000-005.0000]: Hmm.\n")

    emo(src, "Ses05F_script02_2", summary("100.1000", "102.2000", "Ses05F_script02_2_M035", "ang"))
    transcript(src, "Ses05F_script02_2", "Ses05F_script02_2_M035 [100.1000-102.2000]: What?\n")
    emo(src, "Ses05M_script01_1b", summary("20.0000", "21.5000", "Ses05M_script01_1b_F003", "sad"))
    transcript(src, "Ses05M_script01_1b", "Ses05M_script01_1b_F003 [020.0000-021.5000]: Okay.\n")
    return src


@pytest.fixture(scope="module")
def parsed(release):
    return parse_release(release)


def by_id(result):
    return {request.id: request for request in result.requests}


def drop_reasons(result):
    return {drop.id: drop.reason for drop in result.drops}


KEPT = [
    "Ses01F_impro01_F000",
    "Ses01F_impro01_F003",
    "Ses01F_impro01_M000",
    "Ses01F_impro01_M002",
    "Ses03M_impro05a_F000",
    "Ses03M_impro05a_M000",
    "Ses03M_impro05b_F000",
    "Ses03M_impro05b_M000",
    "Ses05F_script02_2_M035",
    "Ses05M_script01_1b_F003",
]


def test_keeps_the_six_class_utterances_sorted_by_id(parsed):
    assert [request.id for request in parsed.requests] == KEPT
    assert [drop.id for drop in parsed.drops] == sorted(drop.id for drop in parsed.drops)


def test_request_fields_come_from_emo_evaluation_and_the_release_layout(parsed, release):
    request = by_id(parsed)["Ses01F_impro01_F000"]
    assert (request.dataset, request.label, request.start, request.end) == ("iemocap", "neu", 6.2901, 8.2357)
    assert request.text == "Excuse me."
    assert request.group == "1"
    session = release / "Session1"
    assert request.video == session / "dialog" / "avi" / "DivX" / "Ses01F_impro01.avi"
    assert request.audio.path == session / "sentences" / "wav" / "Ses01F_impro01" / "Ses01F_impro01_F000.wav"
    assert (request.audio.channel, request.audio.start, request.audio.end) == (0, None, None)
    fallback = request.fallback_audio
    assert fallback.path == session / "dialog" / "wav" / "Ses01F_impro01.wav"
    assert (fallback.channel, fallback.start, fallback.end) == (0, 6.2901, 8.2357)


def test_overlapping_utterances_each_get_a_request(parsed):
    female, male = by_id(parsed)["Ses01F_impro01_F000"], by_id(parsed)["Ses01F_impro01_M000"]
    assert (female.start, female.end, male.start, male.end) == (6.2901, 8.2357, 7.5712, 10.4750)
    assert (female.side, female.crop, female.fallback_audio.channel) == ("L", (0, 0, 0.5, 1), 0)
    assert (male.side, male.crop, male.fallback_audio.channel) == ("R", (0.5, 0, 0.5, 1), 1)


def test_vad_comes_from_the_summary_line_in_valence_activation_dominance_order(parsed):
    requests = by_id(parsed)
    assert requests["Ses01F_impro01_F000"].extra_labels == {
        "vad": {"valence": 2.5, "activation": 2.5, "dominance": 2.5}
    }
    vad = requests["Ses01F_impro01_M000"].extra_labels["vad"]
    assert list(vad) == list(VAD_DIMENSIONS) == ["valence", "activation", "dominance"]
    assert vad == {"valence": 1.5, "activation": 4.0, "dominance": 4.5}
    assert all(type(value) is float for request in parsed.requests for value in request.extra_labels["vad"].values())


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[NaN, 3.0000, 3.0000]", ": valence 'NaN' is not a decimal number"),
        ("[2.0000, inf, 3.0000]", ": activation 'inf' is not a decimal number"),
        ("[2.0000, 3.0000, ]", ": dominance '' is not a decimal number"),
        ("[2.0000, 3.0000, 1_0]", ": dominance '1_0' is not a decimal number"),
        ("[2.0000, 5.5000, 3.0000]", ": activation 5.5 is outside [1, 5]"),
        ("[0.0000, 3.0000, 3.0000]", ": valence 0.0 is outside [1, 5]"),
        ("[2.0000, 3.0000]", " does not hold 3 values"),
        ("[2.0000; 3.0000; 4.0000]", " does not hold 3 values"),
        ("2.0000, 3.0000, 4.0000", " is not bracketed"),
    ],
)
def test_an_untrusted_vad_triple_never_becomes_a_number(text, problem):
    assert parse_vad(text) == (None, f"VAD triple {text!r}{problem}")


def test_vad_range_ends_are_kept():
    assert parse_vad("[1.0000, 5.0000, 3.5]") == ({"valence": 1.0, "activation": 5.0, "dominance": 3.5}, None)
    assert parse_vad("[ 1 , 5 , 2. ]") == ({"valence": 1.0, "activation": 5.0, "dominance": 2.0}, None)


def test_a_bad_vad_triple_keeps_its_utterance_with_vad_none_and_a_note(tmp_path):
    """The class label of the line is still good: the utterance stays, its vad is None, and a note (shown in
    reorg.json warnings) names the file, line and problem. An utterance dropped for its class gets no note;
    a line without the fourth field stays a malformed line."""
    src = tmp_path / "IEMOCAP_full_release"
    path = emo(
        src,
        "Ses01F_impro01",
        summary("1.0000", "2.0000", "Ses01F_impro01_F000", "neu", "[nan, 2.0000, 2.0000]")
        + summary("2.0000", "3.0000", "Ses01F_impro01_M000", "sad", "[2.0000, 6.0000, 2.0000]")
        + summary("3.0000", "4.0000", "Ses01F_impro01_F001", "xxx", "[2.0000]")
        + summary("4.0000", "5.0000", "Ses01F_impro01_M001", "hap", "[4.0000, 3.5000, 3.0000]")
        + "[5.0000 - 6.0000]\tSes01F_impro01_F002\tang\n",
    )
    result = parse_release(src)
    requests = by_id(result)
    assert sorted(requests) == ["Ses01F_impro01_F000", "Ses01F_impro01_M000", "Ses01F_impro01_M001"]
    assert requests["Ses01F_impro01_F000"].extra_labels == {"vad": None}
    assert requests["Ses01F_impro01_M000"].extra_labels == {"vad": None}
    assert requests["Ses01F_impro01_M001"].extra_labels["vad"] == {"valence": 4.0, "activation": 3.5, "dominance": 3.0}
    assert [note.row() for note in result.notes] == [
        {
            "where": line_of(path, "_F000"),
            "warning": "VAD triple '[nan, 2.0000, 2.0000]': valence 'nan' is not a decimal number; "
            "Ses01F_impro01_F000 is kept with vad null",
        },
        {
            "where": line_of(path, "_M000"),
            "warning": "VAD triple '[2.0000, 6.0000, 2.0000]': activation 6.0 is outside [1, 5]; "
            "Ses01F_impro01_M000 is kept with vad null",
        },
    ]
    reasons = drop_reasons(result)
    assert "not one of the classes" in reasons["Ses01F_impro01_F001"]
    assert "expected 4 TAB-separated fields" in reasons[line_of(path, "_F002")]


def test_junk_files_and_annotator_sub_folders_are_ignored(parsed):
    ids = {request.id for request in parsed.requests} | {drop.id for drop in parsed.drops}
    assert "Ses01F_impro01_F099" not in ids
    assert not any("impro02" in item or "Categorical" in item or "Attribute" in item for item in ids)
    assert by_id(parsed)["Ses01F_impro01_F003"].text == ""


def test_text_keeps_colons_bracket_tokens_and_latin1_bytes(parsed):
    assert by_id(parsed)["Ses01F_impro01_M002"].text == "Well: the caf\xe9 said [LAUGHTER]: no."


def test_drops_name_the_reason_file_and_line(parsed, release):
    reasons = drop_reasons(parsed)
    emo_file = release / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt"
    text_file = release / "Session1" / "dialog" / "transcriptions" / "Ses01F_impro01.txt"
    for item, code in (("F001", "xxx"), ("M001", "sur"), ("F002", "fea")):
        reason = reasons[f"Ses01F_impro01_{item}"]
        assert f"'{code}'" in reason and "not one of the classes" in reason
        assert line_of(emo_file, f"_{item}\t") in reason
    malformed = line_of(emo_file, "_F004")
    assert "malformed EmoEvaluation summary line" in reasons[malformed]
    assert "Ses01F_impro09_F000" in reasons and "id rule" in reasons["Ses01F_impro09_F000"]
    assert "unlabelled" in reasons["Ses01F_impro01_MXX0"]
    assert "unlabelled" in reasons["Ses03F_impro06_FXX0"]
    assert "not an utterance" in reasons[line_of(text_file, "M: a note")]
    assert reasons["Ses01F_impro01_F009"] == f"no EmoEvaluation label ({line_of(text_file, '_F009')})"
    for folder in ("EmoEvaluation", "transcriptions"):
        junk = f"Session1/dialog/{folder}/._Ses01F_impro01.txt"
        assert reasons[junk] == f"{junk}: hidden file skipped (macOS resource fork or other dot-file)"
    assert len(parsed.drops) == 11


def test_lines_that_are_not_utf8_are_reported_with_file_and_line(parsed, release):
    """Each such line is decoded as latin-1 on its own; the UTF-8 lines of the file are untouched."""
    emo_file = release / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt"
    text_file = release / "Session1" / "dialog" / "transcriptions" / "Ses01F_impro01.txt"
    assert [note.row() for note in parsed.notes] == [
        {"where": line_of(emo_file, "caf\xe9"), "warning": "not valid UTF-8; decoded as latin-1"},
        {"where": line_of(text_file, "caf\xe9"), "warning": "not valid UTF-8; decoded as latin-1"},
    ]


def test_a_bad_byte_garbles_only_its_own_line(tmp_path):
    src = tmp_path / "IEMOCAP_full_release"
    emo(
        src,
        "Ses01F_impro01",
        summary("1.0000", "2.0000", "Ses01F_impro01_F000", "neu")
        + summary("2.0000", "3.0000", "Ses01F_impro01_M000", "sad"),
    )
    transcript(
        src,
        "Ses01F_impro01",
        "Ses01F_impro01_F000 [001.0000-002.0000]: Grüße, naïve café.\n".encode()
        + b"Ses01F_impro01_M000 [002.0000-003.0000]: caf\xe9\n",
    )
    result = parse_release(src)
    assert [request.text for request in by_id(result).values()] == ["Grüße, naïve café.", "caf\xe9"]
    assert [note.where for note in result.notes] == ["Session1/dialog/transcriptions/Ses01F_impro01.txt:2"]


def test_script_ids_and_impro05a_b_are_separate_dialogs(parsed, release):
    requests = by_id(parsed)
    script = requests["Ses05F_script02_2_M035"]
    assert (script.group, script.side, script.text) == ("5", "R", "What?")
    assert script.video.name == "Ses05F_script02_2.avi"
    assert script.audio.path.parent.name == "Ses05F_script02_2"
    assert requests["Ses05M_script01_1b_F003"].video.name == "Ses05M_script01_1b.avi"
    assert requests["Ses03M_impro05a_M000"].label == "ang"
    assert requests["Ses03M_impro05b_M000"].label == "neu"
    assert requests["Ses03M_impro05a_M000"].video.name == "Ses03M_impro05a.avi"
    assert requests["Ses03M_impro05b_M000"].video.name == "Ses03M_impro05b.avi"


@pytest.mark.parametrize(
    ("side_rule", "expected"),
    [
        (
            "mocap",
            {
                "Ses01F_impro01_F000": "L",
                "Ses01F_impro01_M000": "R",
                "Ses03M_impro05a_M000": "L",
                "Ses03M_impro05a_F000": "R",
                "Ses05M_script01_1b_F003": "R",
                "Ses05F_script02_2_M035": "R",
            },
        ),
        (
            "female-left",
            {
                "Ses01F_impro01_F000": "L",
                "Ses01F_impro01_M000": "R",
                "Ses03M_impro05a_M000": "R",
                "Ses03M_impro05a_F000": "L",
                "Ses05M_script01_1b_F003": "L",
                "Ses05F_script02_2_M035": "R",
            },
        ),
    ],
)
def test_side_rules(release, side_rule, expected):
    requests = by_id(parse_release(release, side_rule=side_rule))
    for item, side in expected.items():
        assert requests[item].side == side
        assert requests[item].crop == ((0, 0, 0.5, 1) if side == "L" else (0.5, 0, 0.5, 1))
        assert requests[item].fallback_audio.channel == (0 if side == "L" else 1)


def test_class_subset(release):
    result = parse_release(release, classes=("ang", "sad"))
    assert [request.id for request in result.requests] == [
        "Ses03M_impro05a_F000",
        "Ses03M_impro05a_M000",
        "Ses05F_script02_2_M035",
        "Ses05M_script01_1b_F003",
    ]
    assert "not one of the classes ang,sad" in drop_reasons(result)["Ses01F_impro01_F000"]


def test_missing_transcripts_are_warned_and_leave_empty_texts(release, caplog):
    with caplog.at_level(logging.WARNING, logger="data_reorg"):
        requests = by_id(parse_release(release))
    assert requests["Ses03M_impro05b_M000"].text == requests["Ses03M_impro05b_F000"].text == ""
    assert "Ses03M_impro05b.txt: no transcription file" in caplog.text
    assert "Ses01F_impro01_F003" in caplog.text


def test_not_a_release_and_unknown_side_rule(tmp_path, release):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        parse_release(tmp_path)
    with pytest.raises(FileNotFoundError, match="missing"):
        parse_release(tmp_path / "missing")
    with pytest.raises(ValueError, match="side rule"):
        parse_release(release, side_rule="male-left")
    assert SIDE_RULES == ("mocap", "female-left")


# -------------------------------------------------------------------------------------------- end to end

FPS, WIDTH, HEIGHT, SECONDS, RATE = 30, 720, 480, 2, 16000
RED, BLUE = (0, 0, 255), (255, 0, 0)  # BGR
# id -> (start, end, code); F000 has a sentence wav, M000 none, F001 a corrupt one.
UTTERANCES = {
    "F000": ("0.2000", "1.0000", "neu"),
    "M000": ("0.5000", "1.5000", "ang"),
    "F001": ("1.2000", "1.9000", "hap"),
    "M001": ("1.6000", "1.9500", "xxx"),
}
# id -> the summary line's [V, A, D]; F001's triple is unusable, so its row keeps vad null.
VADS = {
    "F000": "[2.5000, 2.5000, 2.5000]",
    "M000": "[1.5000, 4.0000, 4.5000]",
    "F001": "[3.5000, NaN, 2.0000]",
    "M001": "[3.0000, 3.0000, 3.0000]",
}


def write_dialog_video(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"DIVX"), FPS, (WIDTH, HEIGHT))
    assert writer.isOpened()
    frame = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    frame[:, : WIDTH // 2], frame[:, WIDTH // 2 :] = RED, BLUE
    for _ in range(FPS * SECONDS):
        writer.write(frame)
    writer.release()


def write_dialog(src: Path, dialog: str) -> None:
    """One dialog: summary lines, transcript, stereo dialog wav (+0.5 left channel, -0.5 right), sentences."""
    session = src / f"Session{dialog[4]}"
    emo(
        src,
        dialog,
        "".join(summary(s, e, f"{dialog}_{item}", code, VADS[item]) for item, (s, e, code) in UTTERANCES.items()),
    )
    transcript(
        src, dialog, "".join(f"{dialog}_{item} [00{s}-00{e}]: Line {item}.\n" for item, (s, e, _) in UTTERANCES.items())
    )
    stereo = np.tile(np.array([[0.5, -0.5]], np.float32), (RATE * SECONDS, 1))
    (session / "dialog" / "wav").mkdir(parents=True, exist_ok=True)
    sf.write(str(session / "dialog" / "wav" / f"{dialog}.wav"), stereo, RATE, subtype="PCM_16")
    sentences = session / "sentences" / "wav" / dialog
    sentences.mkdir(parents=True)
    sf.write(str(sentences / f"{dialog}_F000.wav"), np.full(int(0.8 * RATE), 0.25, np.float32), RATE, subtype="PCM_16")
    write(sentences / f"{dialog}_F001.wav", np.random.default_rng(0).bytes(3000))


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(path): (path.stat().st_size, path.stat().st_mtime_ns) for path in folder.rglob("*")}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Two dialogs, one with a good video and one with a corrupt one, cut by the pipeline."""
    root = tmp_path_factory.mktemp("e2e")
    src, out = root / "IEMOCAP_full_release", root / "out"
    write_dialog(src, "Ses01F_impro01")
    write_dialog_video(src / "Session1" / "dialog" / "avi" / "DivX" / "Ses01F_impro01.avi")
    write_dialog(src, "Ses01F_impro02")
    write(src / "Session1" / "dialog" / "avi" / "DivX" / "Ses01F_impro02.avi", np.random.default_rng(1).bytes(5000))
    before = snapshot(src)
    reorganize(parse_release(src), SplitSpec(mode="random", seed=0), RunOptions(out_dir=out, jobs=1, progress=False))
    return {
        "src": src,
        "out": out,
        "before": before,
        "rows": {row["id"]: row for row in read_jsonl(out / "manifest.jsonl")},
        "drops": {row["id"]: row["reason"] for row in read_jsonl(out / "dropped.jsonl")},
    }


def test_manifest_rows(corpus):
    rows = corpus["rows"]
    assert sorted(rows) == ["Ses01F_impro01_F000", "Ses01F_impro01_F001", "Ses01F_impro01_M000"]
    for item, row in rows.items():
        start, end, code = UTTERANCES[item[-4:]]
        assert list(row) == [*MANIFEST_FIELDS, "vad"]
        assert row["split"] in SPLITS
        assert (row["dataset"], row["label"], row["text"]) == ("iemocap", code, f"Line {item[-4:]}.")
        assert (row["start"], row["end"], row["fps"]) == (float(start), float(end), FPS)
        assert row["side"] == ("L" if item[-4] == "F" else "R")
        in_interval = [i for i in range(FPS * SECONDS) if float(start) <= i / FPS < float(end)]
        assert row["num_frames"] == len(in_interval)
    assert rows["Ses01F_impro01_F000"]["vad"] == {"valence": 2.5, "activation": 2.5, "dominance": 2.5}
    assert rows["Ses01F_impro01_M000"]["vad"] == {"valence": 1.5, "activation": 4.0, "dominance": 4.5}
    assert rows["Ses01F_impro01_F001"]["vad"] is None


def test_an_untrusted_vad_triple_is_a_warning_of_the_run(corpus):
    """The kept F001 with vad null is named in reorg.json; impro02's F001 too (parsed and kept, then lost to
    its corrupt video)."""
    summary = json.loads((corpus["out"] / "reorg.json").read_text(encoding="utf-8"))
    problem = "VAD triple '[3.5000, NaN, 2.0000]': activation 'NaN' is not a decimal number"
    assert summary["warnings"] == [
        {
            "where": f"Session1/dialog/EmoEvaluation/{dialog}.txt:5",
            "warning": f"{problem}; {dialog}_F001 is kept with vad null",
        }
        for dialog in ("Ses01F_impro01", "Ses01F_impro02")
    ]


def test_clips_show_the_speakers_half(corpus):
    for item, row in corpus["rows"].items():
        capture = cv2.VideoCapture(str(corpus["out"] / row["video"]))
        frames = []
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(frame)
        capture.release()
        assert len(frames) == row["num_frames"]
        assert frames[0].shape == (HEIGHT, WIDTH // 2, 3)
        mean = frames[0][100:380, 60:300].reshape(-1, 3).mean(axis=0)
        expected = np.array(RED if row["side"] == "L" else BLUE)
        assert np.abs(mean - expected).max() < 40, (item, mean)


def test_audio_uses_the_sentence_wav_or_the_speakers_dialog_channel(corpus):
    rows = corpus["rows"]
    # id -> (expected samples, expected value, source): sentence wav; missing -> channel 1; corrupt -> channel 0.
    expected = {
        "F000": (int(0.8 * RATE), 0.25, "sentence_wav"),
        "M000": (RATE, -0.5, "dialog_wav_channel_1"),
        "F001": (int(0.7 * RATE), 0.5, "dialog_wav_channel_0"),
    }
    for suffix, (length, value, source) in expected.items():
        row = rows[f"Ses01F_impro01_{suffix}"]
        samples, rate = sf.read(str(corpus["out"] / row["audio"]), always_2d=True)
        assert (rate, samples.shape[1]) == (RATE, 1)
        assert abs(len(samples) - length) <= 1 and row["num_samples"] == len(samples)
        assert np.allclose(samples, value, atol=1e-3)
        assert row["audio_source"] == source
    # The fallbacks are counted in the run's summary too.
    summary = json.loads((corpus["out"] / "reorg.json").read_text(encoding="utf-8"))
    assert summary["audio_sources"] == {"dialog_wav_channel_0": 1, "dialog_wav_channel_1": 1, "sentence_wav": 1}


def test_dropped_reasons_and_untouched_source(corpus):
    drops = corpus["drops"]
    assert "'xxx' is not one of the classes" in drops["Ses01F_impro01_M001"]
    for item in ("F000", "M000", "F001"):
        assert "Ses01F_impro02.avi" in drops[f"Ses01F_impro02_{item}"]
    assert len(drops) == 5
    assert snapshot(corpus["src"]) == corpus["before"]


def _split_of(out: Path) -> dict[str, str]:
    return {row["id"]: row["split"] for row in read_jsonl(out / "manifest.jsonl")}


def test_a_media_failure_moves_no_other_id_to_another_split(corpus, tmp_path):
    """Splits come from the parsed ids: the clips of a corrupt video are dropped, the rest stay put."""
    src = tmp_path / "IEMOCAP_full_release"
    shutil.copytree(corpus["src"], src)
    write_dialog_video(src / "Session1" / "dialog" / "avi" / "DivX" / "Ses01F_impro02.avi")
    for seed in range(5):
        intact, broken = tmp_path / f"intact{seed}", tmp_path / f"broken{seed}"
        reorganize(parse_release(src), SplitSpec(mode="random", seed=seed), RunOptions(out_dir=intact, progress=False))
        reorganize(
            parse_release(corpus["src"]),
            SplitSpec(mode="random", seed=seed),
            RunOptions(out_dir=broken, progress=False),
        )
        before, after = _split_of(intact), _split_of(broken)
        assert len(before) == 6 and sorted(after) == sorted(item for item in before if "impro01" in item)
        assert after == {item: before[item] for item in after}, seed


def test_a_truncated_video_keeps_the_clips_of_its_decodable_part(tmp_path):
    """The clips inside the part that decodes are kept, frame-exact; the others get one reason."""
    src, out = tmp_path / "IEMOCAP_full_release", tmp_path / "out"
    write_dialog(src, "Ses01F_impro01")
    avi = src / "Session1" / "dialog" / "avi" / "DivX" / "Ses01F_impro01.avi"
    write_dialog_video(avi)
    avi.write_bytes(avi.read_bytes()[: int(avi.stat().st_size * 0.8)])
    decodable = decodable_frames(avi)
    stops = {item: math.ceil(float(end) * FPS - 1e-6) for item, (_, end, code) in UTTERANCES.items() if code != "xxx"}
    inside = {f"Ses01F_impro01_{item}" for item, stop in stops.items() if stop <= decodable}
    assert 0 < len(inside) < len(stops), (decodable, stops)

    reorganize(parse_release(src), SplitSpec(mode="random", seed=0), RunOptions(out_dir=out, progress=False))
    rows = _split_of(out)
    assert set(rows) == inside
    drops = {row["id"]: row["reason"] for row in read_jsonl(out / "dropped.jsonl")}
    reasons = {reason for item, reason in drops.items() if item[-4:] in stops}
    assert reasons == {
        f"{avi}: the video decodes only up to frame {decodable} ({decodable / FPS:.3f} s) of the "
        f"{FPS * SECONDS} its header declares (truncated or damaged file); "
        "clips past that point are dropped"
    }
    assert verify(out) == {}
    assert not [path for path in (out / "video").iterdir() if path.name.startswith(".")]
