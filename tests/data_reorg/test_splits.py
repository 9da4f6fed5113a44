import subprocess
import sys

import pytest

from data_reorg.manifest import Drop
from data_reorg.splits import SplitSpec, assign_splits, load_split_lists


def _ids(n):
    return {f"Ses01F_impro01_F{i:03d}": "1" for i in range(n)}


def test_random_split_ratios_and_seed_determinism():
    groups = _ids(100)
    first = assign_splits(SplitSpec("random", seed=3), groups).assignment
    again = assign_splits(SplitSpec("random", seed=3), dict(reversed(list(groups.items())))).assignment
    other = assign_splits(SplitSpec("random", seed=4), groups).assignment
    assert first == again
    assert first != other
    counts = {s: list(first.values()).count(s) for s in ("train", "valid", "test")}
    assert counts == {"train": 70, "valid": 10, "test": 20}


def test_random_split_same_on_another_interpreter():
    """The assignment depends only on the seed and ids, not on hash randomisation or the process."""
    code = (
        "from data_reorg.splits import SplitSpec, assign_splits;"
        "a = assign_splits(SplitSpec('random', seed=7), {str(i): 'g' for i in range(50)}).assignment;"
        "print(sorted(k for k, v in a.items() if v == 'test'))"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env={"PYTHONHASHSEED": seed, "PYTHONPATH": "."},
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1


def test_custom_ratios_and_bad_ratios():
    result = assign_splits(SplitSpec("random", ratios=(8, 1, 1)), _ids(10)).assignment
    assert list(result.values()).count("train") == 8
    with pytest.raises(ValueError, match="ratios"):
        assign_splits(SplitSpec("random", ratios=(1.0, -1.0, 1.0)), _ids(3))


def test_shipped_mesm_lists_have_published_sizes():
    iemocap = load_split_lists("mesm_iemocap")
    assert {k: len(v) for k, v in iemocap.items()} == {"train": 5162, "valid": 737, "test": 1481}
    mosei = load_split_lists("mesm_mosei")
    assert {k: len(v) for k, v in mosei.items()} == {"train": 14524, "valid": 1765, "test": 4188}
    folds = load_split_lists("mosei_sdk_folds")
    assert "81406" in folds["train"] and "-3g5yACwYnA" in folds["train"]


def test_list_split_by_utterance_drops_unlisted_and_reports_missing():
    groups = {"Ses04F_script01_1_F024": "4", "Ses01F_impro01_F999": "1"}
    result = assign_splits(SplitSpec("list", list_name="mesm_iemocap"), groups)
    assert result.assignment == {"Ses04F_script01_1_F024": "train"}
    assert result.drops == [Drop("Ses01F_impro01_F999", "utterance is in no mesm_iemocap split list")]
    assert len(result.missing_from_corpus) == 7380 - 1


def test_sdk_split_by_video_id():
    groups = {
        "-3g5yACwYnA_10": "-3g5yACwYnA",
        "_0efYOjQYRc_3": "_0efYOjQYRc",
        "--qXJuDtHPw_5": "--qXJuDtHPw",
        "-NFrJFQijFE_0": "-NFrJFQijFE",
    }
    result = assign_splits(SplitSpec("list", list_name="mosei_sdk_folds", by_group=True), groups)
    assert result.assignment == {"-3g5yACwYnA_10": "train", "_0efYOjQYRc_3": "test", "--qXJuDtHPw_5": "valid"}
    assert [d.id for d in result.drops] == ["-NFrJFQijFE_0"]
    assert "video -NFrJFQijFE" in result.drops[0].reason


def test_group_split_holds_out_sessions():
    groups = {"a": "1", "b": "2", "c": "3", "d": "3"}
    result = assign_splits(SplitSpec("group", test_groups=("3",), valid_groups=("2",)), groups)
    assert result.assignment == {"a": "train", "b": "valid", "c": "test", "d": "test"}
    with pytest.raises(ValueError, match="both test and valid"):
        assign_splits(SplitSpec("group", test_groups=("2",), valid_groups=("2",)), groups)
