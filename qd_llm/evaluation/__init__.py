"""Evaluation: genomes on tasks, taskforces, best-of-N answers and coverage.

The :class:`Evaluator` scores every (genome, task) pair in batched backend
calls and sandboxed scoring; :mod:`~qd_llm.evaluation.taskforce` picks sets
of experts that cover many tasks; :func:`best_of_n` picks one answer per task
from a taskforce's answers; :mod:`~qd_llm.evaluation.coverage` measures
coverage@N on a task set. Names are imported on first use.
"""

from qd_llm._lazy import lazy_exports

_EXPORTS = {
    "EvalRecord": "qd_llm.evaluation.evaluate",
    "Evaluator": "qd_llm.evaluation.evaluate",
    "looks_like_gibberish": "qd_llm.evaluation.evaluate",
    "GibberishJudge": "qd_llm.evaluation.judge",
    "coverage_curve": "qd_llm.evaluation.taskforce",
    "fitness_taskforce": "qd_llm.evaluation.taskforce",
    "greedy_taskforce": "qd_llm.evaluation.taskforce",
    "random_taskforce": "qd_llm.evaluation.taskforce",
    "BestOfNResult": "qd_llm.evaluation.bestofn",
    "JudgePicker": "qd_llm.evaluation.bestofn",
    "KnockoutPicker": "qd_llm.evaluation.bestofn",
    "MajorityPicker": "qd_llm.evaluation.bestofn",
    "RewardPicker": "qd_llm.evaluation.bestofn",
    "best_of_n": "qd_llm.evaluation.bestofn",
    "make_picker": "qd_llm.evaluation.bestofn",
    "PICKERS": "qd_llm.evaluation.bestofn",
    "TaskSet": "qd_llm.evaluation.coverage",
    "load_task_set": "qd_llm.evaluation.coverage",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
