"""The benchmark's own plumbing: its case list, --rl-every, and the per-case memory process (which `make bench` and
the GPU check run for every case, and which once lacked the full RL model of the rl_every cases)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from benchmarks import bench_rlg
from harness.host import ROOT, child_env


def test_rl_every_selects_its_cases_after_the_exact_ones():
    assert bench_rlg.cases_for(()) == bench_rlg.EXACT_CASES
    assert bench_rlg.cases_for((2, 3)) == bench_rlg.CASES
    assert bench_rlg.cases_for((4,))[-3:] == ("rlg_every4", "rlg_lora_every4", "rlg_lora_batched_every4")
    assert bench_rlg.parse_every("2,3") == (2, 3) and bench_rlg.parse_every("none") == ()
    for bad in ("1", "9", "2,x"):
        with pytest.raises(argparse.ArgumentTypeError, match="2 to 8"):
            bench_rlg.parse_every(bad)


@pytest.mark.parametrize("case", ["rlg_every2", "rlg_lora_batched_every3", "rlg_window50"])
def test_the_memory_process_runs_each_kind_of_case(case):
    proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_rlg", "--memory-child", "tiny", case, "--quick"],
                          cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert figures["peak_mb"] >= figures["loaded_mb"] > 0
