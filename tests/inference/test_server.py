"""The OpenAI-compatible server and client, over loopback, serving the real SmolLM2."""

import json
import shutil
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import pytest

from qd_llm.errors import QdLlmError
from qd_llm.inference.base import Backend, GenerationConfig, GenerationRequest
from qd_llm.inference.openai_client import OpenAIChatClient, normalize_base_url
from qd_llm.inference.server import ChatCompletionServer, flatten_messages

BASE = "smollm2-135m-instruct"
ADAPTER = "noisy-genome"
PROMPT = "Name three colours of the rainbow."


@pytest.fixture(scope="module")
def backend():
    from qd_llm.inference.hf import HFBackend

    backend = HFBackend(base_model=BASE, batch_size=4)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory):
    """A real PEFT adapter with random, large LoRA updates, so its replies differ."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from qd_llm.models.resolve import resolve_base_model

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(resolve_base_model(BASE))
    config = LoraConfig(
        r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    folder = tmp_path_factory.mktemp("adapter")
    get_peft_model(model, config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def server(backend, adapter_dir):
    with ChatCompletionServer(
        backend=backend, base_model=BASE, adapters={ADAPTER: adapter_dir}, default_max_tokens=24
    ) as server:
        yield server.start()


def _client(server, model=BASE, **kwargs) -> OpenAIChatClient:
    return OpenAIChatClient(base_url=server.url, model=model, **kwargs)


def _post(url: str, data: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            raw = response.read()
            is_json = response.headers.get_content_type() == "application/json"
            return response.status, json.loads(raw) if is_json else {"text": raw.decode()}
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_models_lists_base_and_adapters(server):
    assert _client(server).list_models() == [BASE, ADAPTER]


def test_chat_completion_is_openai_shaped_and_greedy_deterministic(server):
    body = {
        "model": BASE,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": 16,
        "temperature": 0,
    }
    status, first = _post(server.url + "/chat/completions", json.dumps(body).encode())
    assert status == 200
    assert first["object"] == "chat.completion"
    assert first["model"] == BASE
    [choice] = first["choices"]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"].strip()
    second = _client(server).chat([{"role": "user", "content": PROMPT}], max_tokens=16)
    assert second == choice["message"]["content"]


def test_adapter_name_selects_the_lora_genome(server):
    messages = [{"role": "user", "content": PROMPT}]
    base_reply = _client(server).chat(messages, max_tokens=16)
    adapter_reply = _client(server, model=ADAPTER).chat(messages, max_tokens=16)
    assert adapter_reply != base_reply
    # The adapter is applied per request, not left on for later base requests.
    assert _client(server).chat(messages, max_tokens=16) == base_reply


def test_stop_string_cuts_the_reply(server):
    messages = [{"role": "user", "content": "Count from 1 to 10, separated by commas."}]
    full = _client(server).chat(messages, max_tokens=24)
    assert "5" in full, full
    cut = _client(server).chat(messages, max_tokens=24, stop=["5"])
    assert "5" not in cut
    assert cut == full[: full.index("5")].strip()


def test_max_tokens_bounds_the_reply(server, backend):
    messages = [{"role": "user", "content": "Write a long story about a dragon."}]
    reply = _client(server).chat(messages, max_tokens=5)
    assert 0 < len(backend.tokenizer(reply).input_ids) <= 6  # re-tokenising may split one


def test_unknown_model_is_404_and_a_clear_client_error(server):
    body = {"model": "no-such-genome", "messages": [{"role": "user", "content": "hi"}]}
    status, reply = _post(server.url + "/chat/completions", json.dumps(body).encode())
    assert status == 404
    assert reply["error"]["code"] == "model_not_found"
    with pytest.raises(QdLlmError, match=r"HTTP 404.*no-such-genome"):
        _client(server, model="no-such-genome", max_retries=0).chat(
            [{"role": "user", "content": "hi"}]
        )


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (json.dumps({"model": BASE, "messages": []}).encode(), "non-empty list"),
        (
            json.dumps({"messages": [{"role": "assistant", "content": "hi"}]}).encode(),
            "from the user",
        ),
        (
            json.dumps(
                {"messages": [{"role": "user", "content": "hi"}], "temperature": -1}
            ).encode(),
            "temperature",
        ),
        (
            json.dumps({"messages": [{"role": "user", "content": "hi"}], "stream": True}).encode(),
            "streaming",
        ),
        (
            json.dumps({"messages": [{"role": "user", "content": "hi"}], "stop": [1]}).encode(),
            "stop",
        ),
    ],
)
def test_bad_requests_are_400_with_a_reason(server, data, fragment):
    status, reply = _post(server.url + "/chat/completions", data)
    assert status == 400
    assert fragment in reply["error"]["message"]
    assert reply["error"]["type"] == "invalid_request_error"


def test_unknown_route_is_404(server):
    status, reply = _post(server.url + "/v1/completions", b"{}")
    assert status == 404
    assert "/v1/chat/completions" in reply["error"]["message"]


def test_adapters_load_and_unload_at_runtime_like_vllm(backend, adapter_dir, tmp_path):
    with ChatCompletionServer(backend=backend, base_model=BASE) as server:
        server.start()
        client = _client(server, max_retries=0)
        client.load_lora_adapter("late", str(adapter_dir))
        client.load_lora_adapter("late", str(adapter_dir))  # same folder again: fine
        assert client.list_models() == [BASE, "late"]
        late = _client(server, model="late").chat([{"role": "user", "content": PROMPT}])
        base = client.chat([{"role": "user", "content": PROMPT}])
        assert late != base
        copy = shutil.copytree(adapter_dir, tmp_path / "copy")
        with pytest.raises(QdLlmError, match="already been loaded"):
            client.load_lora_adapter("late", str(copy))
        with pytest.raises(QdLlmError, match="not a PEFT adapter"):
            client.load_lora_adapter("other", str(tmp_path))
        with pytest.raises(QdLlmError, match="base model's name"):
            client.load_lora_adapter(BASE, str(adapter_dir))
        status, reply = _post(server.url + "/load_lora_adapter", b'{"lora_name": "x"}')
        assert status == 400 and "lora_path" in reply["error"]["message"]
        status, _ = _post(server.url + "/unload_lora_adapter", b'{"lora_name": "late"}')
        assert status == 200
        assert client.list_models() == [BASE]
        status, reply = _post(server.url + "/unload_lora_adapter", b'{"lora_name": "late"}')
        assert status == 404 and "not loaded" in reply["error"]["message"]


def test_concurrent_requests_are_all_answered(server):
    client = _client(server)
    replies: list[str] = []

    def ask():
        replies.append(client.chat([{"role": "user", "content": PROMPT}], max_tokens=8))

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(replies) == 3
    assert len(set(replies)) == 1  # greedy: the lock keeps requests from interfering


def test_flatten_messages_keeps_single_turns_and_labels_conversations():
    system, prompt = flatten_messages(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    )
    assert (system, prompt) == ("Be brief.", "Hi")
    system, prompt = flatten_messages(
        [
            {"role": "user", "content": "Write a task."},
            {"role": "assistant", "content": "{...}"},
            {"role": "user", "content": "Fix it."},
        ]
    )
    assert system is None
    assert prompt == "User: Write a task.\n\nAssistant: {...}\n\nUser: Fix it."


class _FailingBackend(Backend):
    """A backend whose generation always crashes, to exercise 5xx handling."""

    def __init__(self):
        self.calls = 0

    def generate(self, requests: Sequence[GenerationRequest], config: GenerationConfig):
        self.calls += 1
        raise RuntimeError("out of memory")


def test_client_retries_server_errors_then_raises():
    backend = _FailingBackend()
    with ChatCompletionServer(backend=backend, base_model="m") as server:
        server.start()
        client = OpenAIChatClient(base_url=server.url, model="m", max_retries=2, backoff_s=0.01)
        with pytest.raises(QdLlmError, match=r"failed 3 time\(s\).*HTTP 500.*out of memory"):
            client.chat([{"role": "user", "content": "hi"}])
    assert backend.calls == 3


def test_client_retries_connection_errors_then_raises():
    with ChatCompletionServer(backend=_FailingBackend(), base_model="m") as server:
        url = server.url  # bound, then closed below: nothing listens there any more
    client = OpenAIChatClient(base_url=url, model="m", max_retries=1, backoff_s=0.01)
    with pytest.raises(QdLlmError, match=r"failed 2 time\(s\).*is the server running"):
        client.list_models()


def test_client_settings_come_from_the_environment(monkeypatch):
    monkeypatch.delenv("QD_LLM_OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/")
    monkeypatch.setenv("QD_LLM_OPENAI_MODEL", "judge")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    client = OpenAIChatClient()
    assert (client.base_url, client.model, client.api_key) == (
        "http://127.0.0.1:9/v1",
        "judge",
        "sk-test",
    )
    monkeypatch.setenv("QD_LLM_OPENAI_BASE_URL", "http://10.0.0.1:8000/v1")
    assert OpenAIChatClient().base_url == "http://10.0.0.1:8000/v1"
    monkeypatch.delenv("QD_LLM_OPENAI_MODEL")
    with pytest.raises(QdLlmError, match="QD_LLM_OPENAI_MODEL"):
        OpenAIChatClient()


def test_normalize_base_url_rejects_non_http():
    assert normalize_base_url("https://api.example.com/v1/") == "https://api.example.com/v1"
    with pytest.raises(QdLlmError, match="http://host:port/v1"):
        normalize_base_url("localhost:8000")


def test_server_rejects_a_folder_that_is_not_an_adapter(backend, tmp_path):
    with pytest.raises(QdLlmError, match="not a PEFT adapter folder"):
        ChatCompletionServer(backend=backend, base_model=BASE, adapters={"x": tmp_path})


def test_serve_command_is_registered_and_parses_adapters():
    from qd_llm.cli import build_parser
    from qd_llm.inference.serve_commands import parse_adapter

    args = build_parser().parse_args(["serve", "--adapter", "math=/a/b", "--port", "0"])
    assert args.adapter == ["math=/a/b"] and args.port == 0
    assert parse_adapter("math = /a/b") == ("math", Path("/a/b"))
    with pytest.raises(QdLlmError, match="NAME=DIR"):
        parse_adapter("/a/b")


def test_qd_llm_serve_answers_over_http(tmp_path):
    """`qd-llm serve` in its own process: prints its URL, then serves the real model."""
    import re
    import subprocess
    import sys

    process = subprocess.Popen(
        [sys.executable, "-m", "qd_llm.cli", "serve", "--port", "0", "--default-max-tokens", "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = process.stdout.readline()
        match = re.search(r"at (http://127\.0\.0\.1:\d+/v1)", line)
        assert match, line
        client = OpenAIChatClient(base_url=match.group(1), model=BASE, max_retries=0)
        assert client.list_models() == [BASE]
        assert client.chat([{"role": "user", "content": "Hi"}], max_tokens=4).strip()
    finally:
        process.terminate()
        process.wait(timeout=30)
