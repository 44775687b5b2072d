"""An OpenAI-compatible HTTP server over any :class:`~qd_llm.inference.base.Backend`.

Serves ``POST /v1/chat/completions`` and ``GET /v1/models`` so that anything
speaking the OpenAI API — the LLM scientist, an LLM judge, lm-eval's
``local-chat-completions``, curl — can use the base model or any registered
LoRA genome by name. A request's ``model`` names the base model or a genome;
``temperature``, ``top_p``, ``max_tokens`` (or ``max_completion_tokens``),
``stop``, ``seed`` and ``n`` are honoured. Streaming is not offered.
``POST /v1/load_lora_adapter`` and ``/v1/unload_lora_adapter`` (bodies
``{"lora_name", "lora_path"}`` and ``{"lora_name"}``, plain-text replies) add
and remove adapters at runtime exactly as ``vllm serve`` does with
``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``, so a run's freshly bred genomes can
be served without a restart.

The :class:`Backend` interface takes one user message and an optional system
message per request, so a multi-turn conversation is flattened: system
messages become the system prompt and the turns are written out, labelled, in
one user message. Requests are served one at a time through a lock: a backend
holds one model and is not thread-safe.
"""

import contextlib
import itertools
import json
import logging
import threading
import time
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from qd_llm.errors import QdLlmError
from qd_llm.inference.base import Backend, GenerationConfig, GenerationRequest

logger = logging.getLogger(__name__)

_MAX_BODY_BYTES = 16 * 2**20
_MAX_CHOICES = 16
_ROLE_LABELS = {"user": "User", "assistant": "Assistant"}


class RequestError(Exception):
    """A request the server refuses; carries the HTTP status and OpenAI error type."""

    def __init__(self, status: HTTPStatus, message: str, *, error_type: str, code: str | None):
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.code = code


def _bad_request(message: str, code: str | None = None) -> RequestError:
    return RequestError(
        HTTPStatus.BAD_REQUEST, message, error_type="invalid_request_error", code=code
    )


def flatten_messages(messages) -> tuple[str | None, str]:
    """Turns OpenAI chat messages into ``(system_prompt, user_prompt)``.

    A conversation with a single user turn (after any system messages) is
    passed through unchanged; longer ones are written out as labelled turns
    ending with the last user message, which the model answers.

    Raises:
        RequestError: ``messages`` is malformed or does not end with a user turn.
    """
    if not isinstance(messages, list) or not messages:
        raise _bad_request("'messages' must be a non-empty list", "invalid_messages")
    system, turns = [], []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise _bad_request(f"messages[{i}] must be an object with string 'content'")
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(message["content"])
        elif role in _ROLE_LABELS:
            turns.append((role, message["content"]))
        else:
            raise _bad_request(f"messages[{i}] has unknown role {role!r}")
    if not turns or turns[-1][0] != "user":
        raise _bad_request("the last non-system message must come from the user")
    if len(turns) == 1:
        prompt = turns[0][1]
    else:
        prompt = "\n\n".join(f"{_ROLE_LABELS[role]}: {text}" for role, text in turns)
    return ("\n\n".join(system) or None), prompt


def _number(body: dict, key: str, default, kind=float):
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad_request(f"'{key}' must be a number, got {value!r}", f"invalid_{key}")
    return kind(value)


def generation_config(
    body: dict, *, default_max_tokens: int, system_prompt: str | None = None
) -> GenerationConfig:
    """Reads decoding settings from a chat completion request body.

    Raises:
        RequestError: A setting has the wrong type or an invalid value.
    """
    stop = body.get("stop") or ()
    if isinstance(stop, str):
        stop = (stop,)
    if not isinstance(stop, list | tuple) or not all(isinstance(s, str) and s for s in stop):
        raise _bad_request("'stop' must be a string or a list of non-empty strings")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)):
        raise _bad_request(f"'max_tokens' must be an integer, got {max_tokens!r}")
    try:
        return GenerationConfig(
            max_new_tokens=default_max_tokens if max_tokens is None else max_tokens,
            temperature=_number(body, "temperature", 0.0),
            top_p=_number(body, "top_p", 1.0),
            stop=tuple(stop),
            seed=_number(body, "seed", 0, int),
            system_prompt=system_prompt,
        )
    except ValueError as e:
        raise _bad_request(str(e)) from None


class ChatCompletionServer(ThreadingHTTPServer):
    """Serves a backend's base model and registered LoRA genomes over HTTP.

    Args:
        backend: What generates completions.
        base_model: The name clients use for the bare base model.
        adapters: Genome name to PEFT adapter folder; each name is also a model.
        host: Interface to listen on; keep 127.0.0.1 unless you mean to share it.
        port: TCP port; 0 picks a free one (see :attr:`url`).
        default_max_tokens: ``max_tokens`` when a request leaves it out.

    Example:
        >>> with ChatCompletionServer(backend=HFBackend(), base_model="smollm2") as server:
        ...     server.start()
        ...     client = OpenAIChatClient(base_url=server.url, model="smollm2")
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        *,
        backend: Backend,
        base_model: str,
        adapters: Mapping[str, str | Path] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        default_max_tokens: int = 512,
    ):
        adapters = {name: Path(folder) for name, folder in (adapters or {}).items()}
        for name, folder in adapters.items():
            problem = _adapter_problem(name, folder, base_model=base_model)
            if problem:
                raise QdLlmError(problem)
        if default_max_tokens < 1:
            raise QdLlmError(f"default_max_tokens must be >= 1, got {default_max_tokens}")
        self.backend = backend
        self.base_model = base_model
        self.adapters = adapters
        self.default_max_tokens = default_max_tokens
        self.created = int(time.time())
        self._generate_lock = threading.Lock()
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None
        try:
            super().__init__((host, port), _Handler)
        except OSError as e:
            raise QdLlmError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None

    @property
    def url(self) -> str:
        """The base URL clients use, e.g. ``http://127.0.0.1:8000/v1``."""
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def model_names(self) -> list[str]:
        return [self.base_model, *self.adapters]

    def start(self) -> "ChatCompletionServer":
        """Serves in a background daemon thread; returns ``self``."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self.serve_forever, name="qd-llm-server", daemon=True
            )
            self._thread.start()
        return self

    def close(self) -> None:
        """Stops serving (if started) and releases the socket; the backend is kept."""
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
            self._thread = None
        self.server_close()

    def __exit__(self, *exc) -> None:
        self.close()

    def models_response(self) -> dict:
        return {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": self.created, "owned_by": "qd-llm"}
                for name in self.model_names
            ],
        }

    def load_adapter(self, body) -> str:
        """Registers ``body["lora_name"]`` -> ``body["lora_path"]``; returns the reply text.

        Loading a name again with the same folder is a no-op (genome ids are
        content hashes); with another folder it is refused, like vLLM does.

        Raises:
            RequestError: The body is malformed, the folder is not an adapter,
                or the name is taken.
        """
        name, folder = _lora_fields(body, "lora_name", "lora_path")
        folder = Path(folder)
        problem = _adapter_problem(name, folder, base_model=self.base_model)
        if problem:
            raise _bad_request(problem, "invalid_adapter")
        with self._generate_lock:
            if self.adapters.get(name, folder) != folder:
                raise _bad_request(
                    f"the lora adapter {name!r} has already been loaded from {self.adapters[name]}",
                    "adapter_exists",
                )
            self.adapters[name] = folder
        return f"Success: LoRA adapter '{name}' added successfully."

    def unload_adapter(self, body) -> str:
        """Forgets adapter ``body["lora_name"]``; returns the reply text.

        Raises:
            RequestError: The body is malformed or names no loaded adapter.
        """
        (name,) = _lora_fields(body, "lora_name")
        with self._generate_lock:
            if self.adapters.pop(name, None) is None:
                raise RequestError(
                    HTTPStatus.NOT_FOUND,
                    f"the lora adapter {name!r} is not loaded",
                    error_type="invalid_request_error",
                    code="model_not_found",
                )
        return f"Success: LoRA adapter '{name}' removed successfully."

    def chat_completion(self, body) -> dict:
        """Answers one parsed ``/v1/chat/completions`` request body.

        Raises:
            RequestError: The request is malformed or names an unknown model.
        """
        if not isinstance(body, dict):
            raise _bad_request("the request body must be a JSON object")
        if body.get("stream"):
            raise _bad_request("streaming is not supported; leave 'stream' unset", "stream")
        model = body.get("model") or self.base_model
        if model == self.base_model:
            request_kwargs = {}
        elif model in self.adapters:
            request_kwargs = {"genome_id": model, "adapter": self.adapters[model]}
        else:
            raise RequestError(
                HTTPStatus.NOT_FOUND,
                f"model {model!r} does not exist; available: {', '.join(self.model_names)}",
                error_type="invalid_request_error",
                code="model_not_found",
            )
        system_prompt, prompt = flatten_messages(body.get("messages"))
        config = generation_config(
            body, default_max_tokens=self.default_max_tokens, system_prompt=system_prompt
        )
        n = _number(body, "n", 1, int)
        if not 1 <= n <= _MAX_CHOICES:
            raise _bad_request(f"'n' must be between 1 and {_MAX_CHOICES}, got {n}")
        requests = [GenerationRequest(prompt=prompt, **request_kwargs)] * n
        with self._generate_lock:
            texts = self.backend.generate(requests, config)
        return {
            "id": f"chatcmpl-{self.created}-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": text},
                    # The Backend interface does not say why decoding ended.
                    "finish_reason": "stop",
                }
                for i, text in enumerate(texts)
            ],
        }


def _adapter_problem(name: str, folder: Path, *, base_model: str) -> str | None:
    """Why ``folder`` cannot be served as adapter ``name``, or None."""
    if name == base_model:
        return f"adapter name {name!r} is also the base model's name"
    if not (folder / "adapter_config.json").is_file():
        return f"adapter {name!r}: {folder} is not a PEFT adapter folder"
    return None


def _lora_fields(body, *keys: str) -> list[str]:
    if not isinstance(body, dict):
        raise _bad_request("the request body must be a JSON object")
    values = [body.get(key) for key in keys]
    if not all(isinstance(v, str) and v.strip() for v in values):
        raise _bad_request(f"the body needs non-empty strings {', '.join(map(repr, keys))}")
    return [v.strip() for v in values]


class _Handler(BaseHTTPRequestHandler):
    server: ChatCompletionServer
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            self._send_json(HTTPStatus.OK, self.server.models_response())
        else:
            self._send_error(self._not_found())

    def do_POST(self):
        path = self.path.rstrip("/").removeprefix("/v1")
        routes = {
            "/chat/completions": self.server.chat_completion,
            "/load_lora_adapter": self.server.load_adapter,
            "/unload_lora_adapter": self.server.unload_adapter,
        }
        if path not in routes:
            self.close_connection = True  # the unread body would corrupt a kept-alive stream
            self._send_error(self._not_found())
            return
        try:
            reply = routes[path](self._read_json())
            if isinstance(reply, str):
                self._send(HTTPStatus.OK, reply.encode("utf-8"), "text/plain; charset=utf-8")
            else:
                self._send_json(HTTPStatus.OK, reply)
        except RequestError as e:
            self._send_error(e)
        except Exception as e:
            logger.exception("chat completion failed")
            self._send_error(
                RequestError(
                    HTTPStatus.INTERNAL_SERVER_ERROR,
                    f"generation failed: {type(e).__name__}: {e}",
                    error_type="server_error",
                    code=None,
                )
            )

    def _not_found(self) -> RequestError:
        return RequestError(
            HTTPStatus.NOT_FOUND,
            f"no route {self.command} {self.path}; this server offers GET /v1/models, "
            "POST /v1/chat/completions, /v1/load_lora_adapter and /v1/unload_lora_adapter",
            error_type="invalid_request_error",
            code="unknown_url",
        )

    def _read_json(self):
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            self.close_connection = True
            raise _bad_request("Content-Length is not a number") from None
        if not 0 < length <= _MAX_BODY_BYTES:
            self.close_connection = True  # the body is left unread
            raise _bad_request(f"request body must be 1 to {_MAX_BODY_BYTES} bytes of JSON")
        raw = self.rfile.read(length)
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise _bad_request(f"request body is not valid JSON: {e}", "invalid_json") from None

    def _send_error(self, error: RequestError) -> None:
        payload = {"error": {"message": str(error), "type": error.error_type, "code": error.code}}
        self._send_json(error.status, payload)

    def _send_json(self, status: HTTPStatus, payload: dict) -> None:
        self._send(status, json.dumps(payload).encode("utf-8"), "application/json")

    def _send(self, status: HTTPStatus, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(data)

    def log_message(self, format, *args):
        logger.debug("%s %s", self.address_string(), format % args)
