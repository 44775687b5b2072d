"""Tasks: directories of code that make instances and score answers, and who writes them.

A task is a :class:`TaskDir` (``task.py`` + ``task.json``) whose code runs only
in a :class:`SandboxPool`. A :class:`Scientist` turns a :class:`TaskRequest`
into a new task (:class:`ProceduralScientist` from code, :class:`LLMScientist`
through a chat model); the :class:`TaskArchive` keeps the tasks that are novel
enough. :func:`import_benchmark` turns a benchmark into task directories.
Names are imported on first use.
"""

from qd_llm._lazy import lazy_exports

_EXPORTS = {
    "TaskDir": "qd_llm.tasks.taskdir",
    "TaskInfo": "qd_llm.tasks.taskdir",
    "list_tasks": "qd_llm.tasks.taskdir",
    "read_task": "qd_llm.tasks.taskdir",
    "write_task": "qd_llm.tasks.taskdir",
    "SandboxConfig": "qd_llm.tasks.sandbox",
    "SandboxPool": "qd_llm.tasks.sandbox",
    "ScoreJob": "qd_llm.tasks.sandbox",
    "ScoreResult": "qd_llm.tasks.sandbox",
    "Scientist": "qd_llm.tasks.scientist",
    "TaskRejected": "qd_llm.tasks.scientist",
    "TaskRequest": "qd_llm.tasks.scientist",
    "ProceduralScientist": "qd_llm.tasks.procedural",
    "LLMScientist": "qd_llm.tasks.llm_scientist",
    "TaskArchive": "qd_llm.tasks.archive",
    "extract_answer": "qd_llm.tasks.extract",
    "import_benchmark": "qd_llm.tasks.importers",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
