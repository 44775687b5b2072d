"""Tutorial (a) runs to completion at tiny scale (so it cannot rot)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIAL = Path(__file__).parents[1] / "analysis" / "tutorials" / "a_run_resume_plot.py"


@pytest.mark.slow
def test_tutorial_a_runs_resumes_and_plots(tmp_path):
    tmp_path.chmod(0o755)  # sandboxed task code runs as another uid
    out = tmp_path / "run"
    env = {**os.environ, "QD_LLM_TUTORIAL_SCALE": "tiny", "QD_LLM_TUTORIAL_OUT": str(out)}
    done = subprocess.run(
        [sys.executable, str(TUTORIAL)], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming after generation 0" in done.stdout
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["generation"] for row in rows] == [0, 1]
    assert (out / "report.html").is_file()
    assert (out / "figures" / "niche_map.png").stat().st_size > 0
    assert "niche " in done.stdout  # at least one elite listed
