"""The gibberish checks: the heuristic, and a judge model over a real HTTP endpoint."""

import pytest

from qd_llm.config import load_config
from qd_llm.errors import QdLlmError
from qd_llm.evaluation.evaluate import looks_like_gibberish
from qd_llm.evaluation.judge import GibberishJudge, parse_verdict
from qd_llm.inference.base import Backend
from qd_llm.inference.openai_client import OpenAIChatClient
from qd_llm.inference.server import ChatCompletionServer

SOUP = ["#$%^ &*", "))) ((( ::", "@@ ~ @@"]
TEXT = ["The answer is 7.", "CAT", "def f(x): return x"]


class _ScriptedJudge(Backend):
    """Stands in for a large judge model (none runs here): "yes" when a reply it
    is shown has no letters, else "no". It records the prompts it saw."""

    def __init__(self):
        self.prompts = []

    def generate(self, requests, config):
        self.prompts += [r.prompt for r in requests]
        return ["yes" if "'@@ ~ @@'" in r.prompt else "No." for r in requests]


@pytest.fixture(scope="module")
def judge_endpoint():
    backend = _ScriptedJudge()
    with ChatCompletionServer(backend=backend, base_model="judge") as server:
        server.start()
        yield backend, OpenAIChatClient(base_url=server.url, model="judge", max_retries=0)


def test_heuristic_flags_only_output_without_words():
    assert looks_like_gibberish(SOUP)
    assert not looks_like_gibberish(TEXT)
    assert not looks_like_gibberish([*SOUP, "ok fine"])


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [("yes", True), ("Yes.", True), ("no", False), ("No, it is fine", False), ("maybe", None)],
)
def test_parse_verdict(reply, verdict):
    assert parse_verdict(reply) is verdict


def test_judge_asks_over_http_and_follows_the_verdict(judge_endpoint):
    backend, client = judge_endpoint
    judge = GibberishJudge(client=client, max_replies=3)
    assert judge(SOUP) is True
    assert judge(TEXT) is False
    assert judge([]) is False
    assert "Reply 3: '@@ ~ @@'" in backend.prompts[0] and len(backend.prompts) == 2


def test_config_names_the_filter():
    assert load_config(preset="demo").gibberish_filter == "off"
    assert (
        load_config(preset="demo", overrides=["gibberish_filter=judge"]).gibberish_filter == "judge"
    )
    with pytest.raises(QdLlmError, match="gibberish_filter"):
        load_config(preset="demo", overrides=["gibberish_filter=maybe"])
