"""Tutorial (b) — MAP-Elites over LoRA merges with a plain ribs Scheduler — runs to completion."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIAL = (
    Path(__file__).resolve().parent.parent / "analysis" / "tutorials" / "b_map_elites_lora.py"
)


@pytest.mark.slow
def test_tutorial_b(tmp_path):
    env = {**os.environ, "QD_LLM_TUTORIAL_SCALE": "tiny", "QD_LLM_TUTORIAL_OUT": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, str(TUTORIAL)], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # Two MAP-Elites iterations of two children each, bred into the tutorial's store.
    assert "iteration 2: 2 children" in done.stdout
    assert "bred by seed" in done.stdout  # the elites listing ran
    assert (tmp_path / "archive.png").stat().st_size > 0
    children = [p for p in (tmp_path / "genomes").iterdir() if p.is_dir()]
    assert len(children) >= 3 + 1  # the three seeds and at least one distinct child
