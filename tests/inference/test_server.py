"""The OpenAI-compatible server and client, over loopback, serving the real SmolLM2."""

import contextlib
import json
import shutil
import socket
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


def _call(url: str, method: str, body: dict | bytes | None = None, key: str | None = None):
    """``(status, parsed reply)`` for one request, with an optional bearer key."""
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            raw = response.read()
            is_json = response.headers.get_content_type() == "application/json"
            return response.status, json.loads(raw) if is_json else {"text": raw.decode()}
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _post(url: str, data: bytes) -> tuple[int, dict]:
    return _call(url, "POST", data)


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


def test_adapters_load_and_unload_at_runtime_like_vllm(
    backend, adapter_dir, tmp_path, tmp_path_factory
):
    root = tmp_path_factory.getbasetemp()  # holds adapter_dir and tmp_path
    with ChatCompletionServer(backend=backend, base_model=BASE, adapter_root=root) as server:
        server.start()
        client = _client(server, max_retries=0)
        client.load_lora_adapter("late", str(adapter_dir))
        client.load_lora_adapter("late", str(adapter_dir))  # same folder again: fine
        assert client.list_models() == [BASE, "late"]
        late = _client(server, model="late").chat(
            [{"role": "user", "content": PROMPT}], max_tokens=16
        )
        base = client.chat([{"role": "user", "content": PROMPT}], max_tokens=16)
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
    from qd_llm.cli.serve import parse_adapter

    args = build_parser().parse_args(["serve", "--adapter", "math=/a/b", "--port", "0"])
    assert args.adapter == ["math=/a/b"] and args.port == 0
    assert (args.api_key, args.adapter_root, args.batch_window_ms) == (None, None, 10.0)
    assert parse_adapter("math = /a/b") == ("math", Path("/a/b"))
    with pytest.raises(QdLlmError, match="NAME=DIR"):
        parse_adapter("/a/b")


def test_qd_llm_serve_answers_over_http(tmp_path):
    """`qd-llm serve` in its own process: prints its URL, then serves the real model
    to clients with the key it read from the environment."""
    import os
    import re
    import subprocess
    import sys

    process = subprocess.Popen(
        [sys.executable, "-m", "qd_llm.cli", "serve", "--port", "0", "--default-max-tokens", "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "QD_LLM_SERVE_API_KEY": "sk-env"},
    )
    try:
        line = process.stdout.readline()
        match = re.search(r"at (http://127\.0\.0\.1:\d+/v1)", line)
        assert match, line
        client = OpenAIChatClient(base_url=match.group(1), model=BASE, api_key="", max_retries=0)
        with pytest.raises(QdLlmError, match="HTTP 401"):
            client.list_models()
        client.api_key = "sk-env"
        assert client.list_models() == [BASE]
        assert client.chat([{"role": "user", "content": "Hi"}], max_tokens=4).strip()
    finally:
        process.terminate()
        process.wait(timeout=30)


# -- access ---------------------------------------------------------------------------


def test_api_key_guards_every_route(backend, adapter_dir, tmp_path, monkeypatch):
    inside = shutil.copytree(adapter_dir, tmp_path / "genome")
    chat = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    routes = [
        ("GET", "/models", None),
        ("POST", "/chat/completions", chat),
        ("POST", "/load_lora_adapter", {"lora_name": "g", "lora_path": str(inside)}),
        ("POST", "/unload_lora_adapter", {"lora_name": "g"}),
        ("GET", "/no-such-route", None),
    ]
    with ChatCompletionServer(
        backend=backend, base_model=BASE, api_key="sk-right", adapter_root=tmp_path
    ) as server:
        server.start()
        for method, path, body in routes:
            for key in (None, "sk-wrong", "sk-righ", "sk-right2"):
                status, reply = _call(server.url + path, method, body, key)
                assert status == 401, (path, key)
                assert reply["error"]["code"] == "invalid_api_key"
        assert [_call(server.url + p, m, b, "sk-right")[0] for m, p, b in routes] == [
            200,
            200,
            200,
            200,
            404,
        ]
        with pytest.raises(QdLlmError, match="HTTP 401"):
            _client(server, max_retries=0).list_models()
        # The loop's path: the openai backend reads the key from OPENAI_API_KEY and
        # has the server load a genome by path, then generates with it.
        monkeypatch.setenv("OPENAI_API_KEY", "sk-right")
        from qd_llm.inference.openai_backend import OpenAIBackend

        loop_backend = OpenAIBackend(base_url=server.url, base_model=BASE, load_adapters=True)
        request = GenerationRequest(prompt=PROMPT, genome_id="g2", adapter=inside)
        [served] = loop_backend.generate([request], GenerationConfig(max_new_tokens=4))
        assert served == backend.generate([request], GenerationConfig(max_new_tokens=4))[0]
        assert server.adapters["g2"] == inside.resolve()


def test_runtime_loading_is_confined_to_the_adapter_root(backend, adapter_dir, tmp_path):
    root = tmp_path / "root"
    inside = shutil.copytree(adapter_dir, root / "genome")
    (root / "link").symlink_to(adapter_dir, target_is_directory=True)
    leaky = shutil.copytree(adapter_dir, root / "leaky")
    (leaky / "adapter_model.safetensors").unlink()
    (leaky / "adapter_model.safetensors").symlink_to(adapter_dir / "adapter_model.safetensors")
    with ChatCompletionServer(backend=backend, base_model=BASE, adapter_root=root) as server:
        server.start()
        load = server.url + "/load_lora_adapter"
        for path in (adapter_dir, root / "link", root / "genome" / ".." / ".." / adapter_dir.name):
            status, reply = _call(load, "POST", {"lora_name": "x", "lora_path": str(path)})
            assert status == 403, path
            assert "outside the adapter root" in reply["error"]["message"]
        status, reply = _call(load, "POST", {"lora_name": "x", "lora_path": str(leaky)})
        assert status == 403, "a weight file symlinked out of the root"
        status, _ = _call(load, "POST", {"lora_name": "x", "lora_path": str(inside)})
        assert status == 200
        assert server.model_names == [BASE, "x"]
    with ChatCompletionServer(backend=backend, base_model=BASE) as server:
        server.start()
        for route, body in [
            ("/load_lora_adapter", {"lora_name": "y", "lora_path": str(inside)}),
            ("/unload_lora_adapter", {"lora_name": "y"}),
        ]:
            status, reply = _call(server.url + route, "POST", body)
            assert status == 403 and "--adapter-root" in reply["error"]["message"]
        assert server.model_names == [BASE]


def test_listening_beyond_loopback_without_a_key_warns(capsys):
    from qd_llm.inference.server import is_loopback_host

    assert all(map(is_loopback_host, ["127.0.0.1", "127.3.2.1", "::1", "localhost"]))
    assert not any(map(is_loopback_host, ["0.0.0.0", "", "192.168.1.5", "::", "example.org"]))
    # Bound and closed at once: nothing is ever served on the open address.
    for host, key, warned in [
        ("0.0.0.0", None, True),
        ("0.0.0.0", "k", False),
        ("127.0.0.1", None, False),
    ]:
        ChatCompletionServer(
            backend=_FailingBackend(), base_model="m", host=host, api_key=key
        ).close()
        assert (
            "warning: serving on 0.0.0.0 without an API key" in capsys.readouterr().err
        ) == warned


def test_many_clients_connect_at_once_before_the_first_is_accepted():
    # Not started: nothing is accepted, so every connection must fit in the
    # listen backlog. With socketserver's default of 5, the 7th connect hangs.
    connected = 0
    with (
        ChatCompletionServer(backend=_FailingBackend(), base_model="m") as server,
        contextlib.ExitStack() as clients,
    ):
        for _ in range(64):
            client = clients.enter_context(socket.socket())
            client.settimeout(0.5)
            try:
                client.connect(server.server_address[:2])
            except TimeoutError:
                break
            connected += 1
    assert connected == 64


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"api_key": " sk"}, "API key"),
        ({"api_key": ""}, "API key"),
        ({"adapter_root": "/no/such/folder"}, "not a folder"),
        ({"batch_window_ms": -1}, "batch_window_ms"),
        ({"max_queued_requests": 0}, "max_queued_requests"),
    ],
)
def test_bad_server_settings_are_one_line_errors(setting, message):
    with pytest.raises(QdLlmError, match=message):
        ChatCompletionServer(backend=_FailingBackend(), base_model="m", **setting)


# -- batching -------------------------------------------------------------------------


class _CountingBackend(Backend):
    """The real backend, counting its generate calls and the rows of each."""

    def __init__(self, inner: Backend):
        self.inner = inner
        self.calls: list[int] = []

    def generate(self, requests: Sequence[GenerationRequest], config: GenerationConfig):
        self.calls.append(len(requests))
        return self.inner.generate(requests, config)


def _ask_concurrently(server, bodies: list[dict]) -> list[tuple[int, dict]]:
    """Sends every body at once from its own thread; replies in body order."""
    replies: list = [None] * len(bodies)
    start = threading.Barrier(len(bodies))

    def ask(i):
        start.wait()
        replies[i] = _call(server.url + "/chat/completions", "POST", bodies[i])

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return replies


@pytest.fixture(scope="module")
def second_adapter(adapter_dir, tmp_path_factory):
    """``adapter_dir`` with its LoRA B matrices negated: another genome, other replies."""
    from safetensors.torch import load_file, save_file

    folder = shutil.copytree(adapter_dir, tmp_path_factory.mktemp("second") / "adapter")
    weights = load_file(folder / "adapter_model.safetensors")
    save_file(
        {k: -v if "lora_B" in k else v for k, v in weights.items()},
        folder / "adapter_model.safetensors",
    )
    return folder


def _serving(backend, adapters, batch_window_ms):
    return ChatCompletionServer(
        backend=backend, base_model=BASE, adapters=adapters, batch_window_ms=batch_window_ms
    )


def test_concurrent_requests_share_backend_calls_and_get_their_solo_answers(
    backend, adapter_dir, second_adapter
):
    def body(model, content, **settings):
        return {"model": model, "messages": [{"role": "user", "content": content}], **settings}

    bodies = [
        body(BASE, PROMPT, max_tokens=4),
        body(ADAPTER, PROMPT, max_tokens=4),
        body("second", "What is 2+3?", max_tokens=4, seed=5),  # greedy: the seed is moot
        body(ADAPTER, "What is 2+3?", max_tokens=3),  # other settings: a call of its own
        body("second", PROMPT, max_tokens=4, temperature=0.9, seed=7),  # sampled: alone
    ]
    counting = _CountingBackend(backend)
    adapters = {ADAPTER: adapter_dir, "second": second_adapter}
    # batch_window_ms=0: one request per backend call, however they arrive.
    with _serving(counting, adapters, batch_window_ms=0) as server:
        alone = _ask_concurrently(server.start(), bodies)
    assert counting.calls == [1] * len(bodies)
    counting.calls.clear()
    # A wide window, so that every request arrives within it even on a busy machine.
    with _serving(counting, adapters, batch_window_ms=1500) as server:
        together = _ask_concurrently(server.start(), bodies)
    assert sorted(counting.calls) == [1, 1, 3]
    assert [status for status, _ in alone + together] == [200] * 2 * len(bodies)
    texts = [[c["message"]["content"] for c in reply["choices"]] for _, reply in alone]
    assert [[c["message"]["content"] for c in r["choices"]] for _, r in together] == texts
    assert len({t[0] for t in texts[:3]}) == 3  # three genomes, three different answers


def test_a_failing_request_fails_alone(backend, adapter_dir, tmp_path):
    doomed = shutil.copytree(adapter_dir, tmp_path / "doomed")
    bodies = [
        {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 3}
        for model in (BASE, "doomed", ADAPTER)
    ]
    counting = _CountingBackend(backend)
    adapters = {ADAPTER: adapter_dir, "doomed": doomed}
    with _serving(counting, adapters, batch_window_ms=0) as server:
        alone = [_call(server.start().url + "/chat/completions", "POST", bodies[i]) for i in (0, 2)]
    counting.calls.clear()
    with _serving(counting, adapters, batch_window_ms=1500) as server:
        shutil.rmtree(doomed)  # registered, then gone: loading it fails inside the backend
        together = _ask_concurrently(server.start(), bodies)
    assert counting.calls == [3, 1, 1, 1]  # the gathered call failed; each retried alone
    (ok_status, first), (bad_status, error), (_, third) = together
    assert (ok_status, bad_status) == (200, 500)
    assert "not a PEFT adapter folder" in error["error"]["message"]
    assert [first["choices"], third["choices"]] == [r["choices"] for _, r in alone]
