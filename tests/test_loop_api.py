"""The loop from Python: injected components, one generation at a time, global RNGs untouched."""

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from _tiny_loop import TINY

from qd_llm import components
from qd_llm.config import load_config
from qd_llm.errors import QdLlmError
from qd_llm.inference.base import GenerationConfig, GenerationRequest
from qd_llm.loop import Coevolution
from qd_llm.runs import RunDir
from qd_llm.tasks.scientist import Scientist, TaskRequest
from qd_llm.tasks.taskdir import Lineage, TaskDir, TaskInfo, write_task

# A task in the AC/DC reference layout: repeat one word.
ECHO_CODE = """
class TaskFamily:
    @staticmethod
    def get_tasks():
        return {"1": {"word": "WORD"}}

    @staticmethod
    def get_instructions(t):
        return "Repeat exactly this word and nothing else: " + t["word"]

    @staticmethod
    def score(t, submission):
        return 1.0 if t["word"].lower() in submission.lower() else 0.0
"""

WORDS = ("apple", "river", "orange", "mountain", "violet", "thunder")


class EchoScientist(Scientist):
    """A third-party scientist: every request gets a repeat-a-word task."""

    name = "echo"

    def __init__(self):
        self.requests: list[TaskRequest] = []

    def propose(self, request: TaskRequest, out_root: Path) -> TaskDir:
        self.requests.append(request)
        word = WORDS[len(self.requests) % len(WORDS)]
        return write_task(
            out_root,
            task_id=f"echo_{word}",
            code=ECHO_CODE.replace("WORD", word),
            info=TaskInfo(
                name=f"echo_{word}",
                description=f"Repeat the word {word} back verbatim.",
                capability="instruction following",
            ),
            lineage=Lineage(
                generation_type=request.operation,
                parent_task=request.parent.task_id if request.parent else None,
                created_at_generation=request.generation,
                extra={"scientist": self.name},
            ),
            overwrite=True,
        )


def _global_states():
    return random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state().clone()


@pytest.mark.slow
def test_injected_components_step_by_step(tmp_path):
    tmp_path.chmod(0o755)  # the sandbox's unprivileged uid reads the tasks
    config = load_config(preset="demo", overrides=[*TINY, "population.generations=1"])
    backend = components.make_backend(config)
    sandbox = components.make_sandbox(config)
    scientist = EchoScientist()
    run = RunDir.create(tmp_path / "run", config.to_dict())
    random.seed(1234)
    before = _global_states()
    loop = Coevolution(config, run, backend=backend, sandbox=sandbox, scientist=scientist)
    try:
        first = loop.step()
        assert first["generation"] == 0 and not loop.done
        assert run.metrics() == [first]
        loop.run()
        assert loop.done and [r["generation"] for r in run.metrics()] == [0, 1]
        with pytest.raises(QdLlmError, match="has run all 1 generations"):
            loop.step()
    finally:
        loop.close()
    after = _global_states()
    assert before[0] == after[0]
    assert np.array_equal(before[1], after[1])
    assert torch.equal(before[2], after[2])
    # The scientist wrote the run's tasks; the loop asked it for the initial ones and adapted.
    assert scientist.requests[0].operation == "initial"
    assert {t.name for t in run.tasks_dir.iterdir()} <= {f"echo_{w}" for w in WORDS}
    # Injected components are the caller's: still open after the loop closed.
    assert len(backend.generate([GenerationRequest(prompt="Hi")], GenerationConfig())) == 1
    assert sandbox.load_instances(next(run.tasks_dir.iterdir()))
    sandbox.close()
    backend.close()
