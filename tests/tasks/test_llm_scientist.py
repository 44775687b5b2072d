"""The LLM scientist: reply parsing, and the whole flow over a real loopback HTTP server.

Two kinds of scientist sit behind the same :class:`ChatCompletionServer`:

* the real SmolLM2-135M-Instruct, given too few tokens per reply for any
  complete task, so the outcome is known by design: two rounds over HTTP, the
  model's own first reply fed back to it, then a rejection with a reason;
* a scripted backend replaying canned well-formed replies: a stand-in for a
  large scientist model (which cannot run here) so the accept path, feedback
  and lineage are tested deterministically.
"""

import json
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest

from qd_llm.inference.base import Backend, GenerationConfig, GenerationRequest
from qd_llm.inference.openai_client import OpenAIChatClient
from qd_llm.inference.server import ChatCompletionServer
from qd_llm.tasks import prompts
from qd_llm.tasks.llm_scientist import LLMScientist, ReplyError, parse_reply, static_problems
from qd_llm.tasks.sandbox import SandboxConfig, load_instances
from qd_llm.tasks.scientist import TaskRejected, TaskRequest
from qd_llm.tasks.taskdir import Lineage, TaskInfo, read_task, write_task

GOOD_CODE = textwrap.dedent(
    """\
    class TaskFamily:
        @staticmethod
        def get_tasks():
            return {str(i): {"a": i, "b": 2 * i + 1} for i in range(4)}

        @staticmethod
        def get_instructions(t):
            return f"What is {t['a']} + {t['b']}? Reply with the number only."

        @staticmethod
        def score(t, submission):
            try:
                return float(int(submission.strip()) == t["a"] + t["b"])
            except ValueError:
                return 0.0
    """
)
CRASHING_CODE = GOOD_CODE.replace("return {str(i)", "return 1 / 0 or {str(i)")
OUT_OF_RANGE_CODE = GOOD_CODE.replace("return 0.0", "return 2.0")
FIELDS = {
    "name_of_task": "small_sums",
    "description_of_task": "Add two small integers.",
    "capability_being_measured": "arithmetic",
    "estimated_human_difficulty": "1",
    "example_instruction": "What is 0 + 1? Reply with the number only.",
}
SANDBOX = SandboxConfig(wall_seconds=10.0)


def _reply(code: str = GOOD_CODE, done=True, **overrides) -> str:
    return json.dumps({"thought": "Sums are easy.", **FIELDS, "task_family": code, "done": done,
                       **overrides})  # fmt: skip


# --- parsing: a corpus of malformed replies --------------------------------------------

_FIELDS_JSON = json.dumps(FIELDS)[1:-1]  # the fields without braces, to splice into replies
_CODE_JSON = json.dumps(GOOD_CODE)
_CODE_RAW_NEWLINES = GOOD_CODE.replace('"', '\\"')  # quotes escaped, newlines left raw
_PY_DICT_FIELDS = ", ".join(f"'{k}': {v!r}" for k, v in FIELDS.items())

ACCEPTED_REPLIES = {
    "bare json": _reply(),
    "fenced json with prose around": f"Here is my task!\n```json\n{_reply()}\n```\nHope it helps.",
    "untagged fence": f"```\n{_reply()}\n```",
    "done as the string True": _reply(done="True"),
    "done as yes": _reply(done="yes"),
    "trailing commas": f'{{{_FIELDS_JSON}, "task_family": {_CODE_JSON}, "done": true,}}',
    "braces in prose before the object": f"I will use {{a}} and {{b}} here.\n{_reply()}",
    "raw newlines inside the code string": (
        f'{{{_FIELDS_JSON}, "task_family": "{_CODE_RAW_NEWLINES}", "done": true}}'
    ),
    "python-style single quotes": (
        f"{{{_PY_DICT_FIELDS}, 'task_family': {GOOD_CODE!r}, 'done': True,}}"
    ),
    "code in its own python block": (
        f'```json\n{{{_FIELDS_JSON}, "done": true}}\n```\n```python\n{GOOD_CODE}```'
    ),
    "code fenced inside the json string": _reply(code=f"```python\n{GOOD_CODE}```"),
    "task.json fields nested": json.dumps(
        {"task_json": FIELDS, "task_family": GOOD_CODE, "done": "true"}
    ),
}


@pytest.mark.parametrize("text", ACCEPTED_REPLIES.values(), ids=ACCEPTED_REPLIES.keys())
def test_parse_reply_tolerates_common_deviations(text):
    reply = parse_reply(text)
    assert reply.info.name == "small_sums"
    assert reply.info.difficulty == "1"
    assert reply.done is True
    assert reply.code.strip() == GOOD_CODE.strip()
    assert static_problems(reply.code) == []


def test_parse_reply_reads_done_false_and_normalises_difficulty():
    reply = parse_reply(_reply(done="False", estimated_human_difficulty=3))
    assert reply.done is False
    assert reply.info.difficulty == "3"
    assert reply.thought == "Sums are easy."


REJECTED_REPLIES = {
    "empty": ("   \n", "empty"),
    "prose only": ("I'm sorry, I cannot write code today.", "no JSON object"),
    "truncated mid-string": (_reply()[:300], "truncated"),
    "truncated model output": ('```json\n{"thought": "Let me think about', "truncated"),
    "no code": (json.dumps({**FIELDS, "done": True}), "no task code"),
    "missing task fields": (
        json.dumps({"task_family": GOOD_CODE, "done": True}),
        "name_of_task, description_of_task, capability_being_measured",
    ),
    "done neither true nor false": (_reply(done="maybe"), '"done"'),
    "a json list holding the fields": (json.dumps([FIELDS, GOOD_CODE]), "no task code"),
    "unrelated json": ('{"status": "ok", "value": 3}', "task fields"),
    "repeated garbage": ("{[(" * 500, "truncated"),
}


@pytest.mark.parametrize(("text", "reason"), REJECTED_REPLIES.values(), ids=REJECTED_REPLIES.keys())
def test_parse_reply_rejects_unusable_replies_with_a_reason(text, reason):
    with pytest.raises(ReplyError) as excinfo:
        parse_reply(text)
    assert reason in str(excinfo.value)


MALFORMED_DIR = Path(__file__).parent / "data" / "malformed_replies"


@pytest.mark.parametrize("path", sorted(MALFORMED_DIR.glob("*.txt")), ids=lambda p: p.stem)
def test_malformed_reply_corpus_is_rejected_with_a_reason(path):
    with pytest.raises(ReplyError) as excinfo:
        parse_reply(path.read_text(encoding="utf-8"))
    assert str(excinfo.value).strip()


def test_malformed_reply_corpus_is_present():
    assert len(list(MALFORMED_DIR.glob("*.txt"))) >= 5


@pytest.mark.parametrize(
    ("code", "problem"),
    [
        ("class TaskFamily:\n    def get_tasks(:\n", "does not parse"),
        ("def get_tasks():\n    return {}\n", "no top-level class TaskFamily"),
        (GOOD_CODE.replace("def score", "def grade"), "lacks score"),
    ],
)
def test_static_problems_are_found_without_running_code(code, problem):
    [found] = static_problems(code)
    assert problem in found


# --- the flow over HTTP ----------------------------------------------------------------


class RecordingBackend(Backend):
    """Records every request, then answers with ``inner`` (or from a script).

    Args:
        inner: A real backend to answer with (its drafts are kept in
            ``inner_drafts``); None to answer from ``drafts``.
        drafts: Canned scientist replies, consumed in order (the last repeats).
        answer: Canned reply to "solve this instance" requests.
    """

    def __init__(self, *, inner: Backend | None = None, drafts=(), answer="Answer: 1"):
        self.inner = inner
        self.drafts = list(drafts)
        self.answer = answer
        self.draft_prompts: list[str] = []
        self.answer_prompts: list[str] = []
        self.inner_drafts: list[str] = []

    def generate(self, requests: Sequence[GenerationRequest], config: GenerationConfig):
        is_answer = config.system_prompt == prompts.ANSWER_SYSTEM_PROMPT
        (self.answer_prompts if is_answer else self.draft_prompts).extend(
            r.prompt for r in requests
        )
        if self.inner is not None:
            replies = self.inner.generate(requests, config)
            if not is_answer:
                self.inner_drafts.extend(replies)
            return replies
        if is_answer:
            return [self.answer] * len(requests)
        return [self.drafts.pop(0) if len(self.drafts) > 1 else self.drafts[0]] * len(requests)


def _propose(backend, request, out_root, **kwargs):
    model = "scripted-scientist"
    with ChatCompletionServer(backend=backend, base_model=model) as server:
        server.start()
        client = OpenAIChatClient(base_url=server.url, model=model, max_retries=0)
        scientist = LLMScientist(client=client, sandbox=SANDBOX, **kwargs)
        return scientist.propose(request, out_root)


@pytest.fixture
def parent(tmp_path):
    return write_task(
        tmp_path / "pool",
        task_id="parent_sums",
        code=GOOD_CODE,
        info=TaskInfo.from_json(FIELDS),
        lineage=Lineage(),
    )


def test_scripted_scientist_fixes_a_crashing_task_after_feedback(tmp_path, parent):
    backend = RecordingBackend(drafts=[_reply(CRASHING_CODE, done=False), _reply(done="true")])
    request = TaskRequest(
        operation="harder", parent=parent, parent_pass_rate=0.75, generation=4, seed=1
    )
    task = _propose(backend, request, tmp_path / "out", max_reflections=2)

    first_prompt, second_prompt = backend.draft_prompts
    assert "75% of the current models pass" in first_prompt
    assert "class TaskFamily" in first_prompt and "Parent task: small_sums" in first_prompt
    assert "ZeroDivisionError" in second_prompt  # the sandbox error was fed back
    assert len(backend.answer_prompts) == 1  # only the working draft was answered
    assert "Reply with the number only." in backend.answer_prompts[0]

    on_disk = read_task(task.path)
    assert on_disk.code == GOOD_CODE
    assert on_disk.info.name == "small_sums"
    assert on_disk.lineage.generation_type == "harder"
    assert on_disk.lineage.parent_task == "parent_sums"
    assert on_disk.lineage.parent_pass_rate == 0.75
    assert on_disk.lineage.created_at_generation == 4
    assert on_disk.lineage.extra == {
        "scientist": "llm",
        "model": "scripted-scientist",
        "reflections": 1,
        "declared_done": True,
        "scientist_score": 0.0,  # its canned "Answer: 1" is wrong for every instance but 0
    }
    assert len(load_instances(task.path, sandbox=SANDBOX)) == 4


def test_scientist_feedback_reports_its_own_score(tmp_path):
    backend = RecordingBackend(drafts=[_reply(done=False), _reply(done=True)], answer="Answer: 1")
    _propose(backend, TaskRequest(operation="initial", seed=0), tmp_path, max_reflections=1)
    feedback = backend.draft_prompts[1]
    assert "get_tasks() returned 4 instance(s)" in feedback
    assert "Extracted answer: '1'; score(): 1.00" in feedback  # instance 0: 0 + 1


def test_working_draft_is_accepted_when_rounds_run_out(tmp_path):
    backend = RecordingBackend(drafts=[_reply(done=False)])
    task = _propose(backend, TaskRequest(operation="initial"), tmp_path, max_reflections=1)
    assert len(backend.draft_prompts) == 2
    assert task.lineage.extra["declared_done"] is False
    assert task.lineage.extra["reflections"] == 1


@pytest.mark.parametrize(
    ("drafts", "reason"),
    [
        (["I refuse."], "unreadable reply: it contains no JSON object"),
        ([_reply(CRASHING_CODE)], "ZeroDivisionError"),
        ([_reply(OUT_OF_RANGE_CODE)], "score() failed on a dummy answer"),
        ([_reply("print('hi')\n")], "no top-level class TaskFamily"),
    ],
    ids=["garbage", "crash", "score out of range", "no class"],
)
def test_broken_drafts_are_rejected_after_bounded_rounds(tmp_path, drafts, reason):
    backend = RecordingBackend(drafts=drafts)
    with pytest.raises(TaskRejected, match="after 3 round") as excinfo:
        _propose(backend, TaskRequest(operation="initial"), tmp_path, max_reflections=2)
    assert reason in str(excinfo.value)
    assert len(backend.draft_prompts) == 3
    assert not any(tmp_path.iterdir())  # nothing written
    if drafts[0] == "I refuse.":
        assert "could not be read" in backend.draft_prompts[1]


MALFORMED_DRAFTS = {
    "empty": ("", "the reply is empty"),
    "not JSON": ("Sure! Here is a task about sums: add two numbers.", "no JSON object"),
    "code without TaskFamily": (_reply("def get_tasks():\n    return {}\n"), "no top-level class"),
    "1 MB": (_reply(GOOD_CODE + "# padding\n" * 100_000), "longer than 200000 characters"),
}


@pytest.mark.parametrize(("draft", "reason"), MALFORMED_DRAFTS.values(), ids=list(MALFORMED_DRAFTS))
def test_malformed_draft_is_declined_and_the_loop_goes_on(tmp_path, draft, reason):
    from qd_llm.config import load_config
    from qd_llm.loop import Coevolution
    from qd_llm.runs import RunDir

    backend = RecordingBackend(drafts=[draft])
    with pytest.raises(TaskRejected, match="after 1 round") as excinfo:
        _propose(backend, TaskRequest(operation="initial"), tmp_path / "out", max_reflections=0)
    assert reason in str(excinfo.value)
    assert not (tmp_path / "out").exists()  # nothing written
    # In the loop the declined draft is one declined request, not an error.
    config = load_config(overrides=["tasks.scientist=llm", "progress=false"])
    run = RunDir.create(tmp_path / "run", config.to_dict())
    loop = Coevolution(config, run)
    model = "scripted-scientist"
    with ChatCompletionServer(backend=backend, base_model=model) as server:
        server.start()
        client = OpenAIChatClient(base_url=server.url, model=model, max_retries=0)
        scientist = LLMScientist(client=client, sandbox=SANDBOX, max_reflections=0)
        request = TaskRequest(operation="initial")
        assert loop._offer_task(scientist, request, generation=0) is None
    assert not run.tasks_dir.exists()


def test_novel_request_shows_archive_examples(tmp_path, parent):
    other = write_task(
        tmp_path / "pool",
        task_id="word_reversal",
        code=GOOD_CODE,
        info=TaskInfo(name="word_reversal", description="Reverse a word.", capability="spelling"),
        lineage=Lineage(),
    )
    backend = RecordingBackend(drafts=[_reply()])
    _propose(
        backend,
        TaskRequest(operation="novel", parent=parent, context=(parent, other)),
        tmp_path / "out",
        max_reflections=0,
    )
    [prompt] = backend.draft_prompts
    assert "different capability" in prompt
    assert "Existing task: word_reversal" in prompt
    assert prompt.count("small_sums") == 1  # the parent is not repeated as an example


# --- the real SmolLM2 as the scientist -------------------------------------------------


@pytest.fixture(scope="module")
def smollm2():
    from qd_llm.inference.hf import HFBackend

    backend = HFBackend(base_model="smollm2-135m-instruct")
    yield backend
    backend.close()


# A working task needs the three required fields and a TaskFamily with its three
# methods: about 70 SmolLM2 tokens even written as tersely as this. Replies get 32.
MINIMAL_TASK_REPLY = json.dumps(
    {
        "name_of_task": "a",
        "description_of_task": "a",
        "capability_being_measured": "a",
        "task_family": "class TaskFamily:\n def get_tasks(): return {'1':{}}\n"
        " def get_instructions(t): return 'a'\n def score(t,s): return 0",
    },
    separators=(",", ":"),
)
REAL_REPLY_TOKENS = 32


def test_real_smollm2_scientist_is_rejected_after_seeing_its_own_reply(tmp_path, smollm2):
    assert len(smollm2.tokenizer(MINIMAL_TASK_REPLY).input_ids) > 2 * REAL_REPLY_TOKENS
    backend = RecordingBackend(inner=smollm2)
    model = "smollm2-135m-instruct"
    with ChatCompletionServer(backend=backend, base_model=model) as server:
        server.start()
        # A generous timeout: a CPU shared with other jobs can be slow, and a
        # timed-out request would be retried from scratch.
        client = OpenAIChatClient(base_url=server.url, model=model, timeout_s=600, max_retries=0)
        scientist = LLMScientist(
            client=client,
            sandbox=SANDBOX,
            max_reflections=1,
            max_tokens=REAL_REPLY_TOKENS,
            answer_max_tokens=16,
            temperature=0.0,
        )
        with pytest.raises(TaskRejected) as excinfo:
            scientist.propose(TaskRequest(operation="initial"), tmp_path)
    prefix = "no working task after 2 round(s); last: "
    assert str(excinfo.value).startswith(prefix) and len(str(excinfo.value)) > len(prefix)
    assert len(backend.draft_prompts) == len(backend.inner_drafts) == 2
    assert backend.answer_prompts == []  # no draft got as far as the sandbox
    first_reply, second_prompt = backend.inner_drafts[0], backend.draft_prompts[1]
    assert first_reply.strip() and first_reply.strip() in second_prompt  # fed back
    assert "Round 2 of 2." in second_prompt
    assert not any(tmp_path.iterdir())  # nothing written
