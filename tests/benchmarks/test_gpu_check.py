"""``benchmarks/gpu_check.py --quick`` on a machine without CUDA: one JSON object, the CPU parts run on
CPU and pass, the CUDA parts say they were skipped, exit status 0."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from e2e.models.layers import sparse_conv

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
CPU_PARTS = ("spconv_vs_torch", "mesm_vs_fe2e_time", "bf16_keep_agreement")
CUDA_PARTS = ("mtcnn_cuda", "ddp_nccl", "demo_train_predict")


@pytest.fixture(scope="module")
def report() -> dict:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # the same answer on a machine with a GPU
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert time.perf_counter() - started < 60
    return json.loads(done.stdout)  # one JSON object and nothing else on stdout


def test_report_has_every_part_and_the_environment(report):
    assert set(report) == {"environment", "quick", "seconds", *CPU_PARTS, *CUDA_PARTS}
    assert report["quick"] is True and report["environment"]["device"] == "cpu"
    assert report["environment"]["gpu"] is None


def test_cuda_parts_are_skipped_without_cuda(report):
    for part in CUDA_PARTS:
        assert report[part] == {"skipped": "no CUDA device"}


def test_cpu_parts_run_on_cpu_and_pass(report):
    for part in CPU_PARTS:
        result = report[part]
        assert result["device"] == "cpu", (part, result)
        if part == "spconv_vs_torch" and sparse_conv.spconv is None:
            assert result["ok"] is False and "spconv is not importable" in result["error"]
            continue
        assert result["ok"] is True, (part, result.get("error"), result.get("where"))


def test_figures_are_what_they_claim(report):
    comparison = report["spconv_vs_torch"]
    if sparse_conv.spconv is not None:
        for modality in ("faces", "audio"):
            figures = comparison[modality]
            assert figures["same_kept_sites"] and figures["bf16_output_dtype"] == "torch.float32"
            assert figures["forward_max_rel"] <= comparison["tolerance_rel"]
    timing = report["mesm_vs_fe2e_time"]
    assert timing["ratio_p0.5"] == pytest.approx(timing["ms"]["mesm_p0.5"] / timing["ms"]["fe2e"], rel=1e-2)
    assert timing["meets_target"] == (timing["ratio_p0.5"] <= 0.75)
    kept = timing["kept_fraction_p0.3"]["v"][0], timing["kept_fraction_p0.5"]["v"][0]
    assert 0 < kept[0] < kept[1] < 1  # fewer sites at the smaller p
    agreement = report["bf16_keep_agreement"]
    assert 0.5 < agreement["overall"] <= 1.0 and len(agreement["faces"]) == len(agreement["audio"]) == 3


def test_unknown_parts_are_a_usage_error(capsys, monkeypatch):
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check", module)  # its dataclasses look their module up
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--parts", "mtcnn_cuda,nope"])
    assert exit_info.value.code == 2
    assert "unknown parts nope" in capsys.readouterr().err
