"""An OpenAI-compatible HTTP server over any :class:`~qd_llm.inference.base.Backend`.

Serves ``POST /v1/chat/completions`` and ``GET /v1/models`` so that anything
speaking the OpenAI API — the LLM scientist, an LLM judge, lm-eval's
``local-chat-completions``, curl — can use the base model or any registered
LoRA genome by name. A request's ``model`` names the base model or a genome;
``temperature``, ``top_p``, ``max_tokens`` (or ``max_completion_tokens``),
``stop``, ``seed`` and ``n`` are honoured. Streaming is not offered.

**Runtime adapters.** ``POST /v1/load_lora_adapter`` and
``/v1/unload_lora_adapter`` (bodies ``{"lora_name", "lora_path"}`` and
``{"lora_name"}``, plain-text replies) add and remove adapters at runtime
exactly as ``vllm serve`` does with ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``,
so a run's freshly bred genomes can be served without a restart. Like vLLM's,
these routes are off unless asked for: they work only when the server has an
``adapter_root``, and then only for folders that resolve (symlinks followed)
inside it — a client cannot make the server read arbitrary paths.

**Access.** With an ``api_key`` every route requires
``Authorization: Bearer KEY`` (compared in constant time); anything else gets
HTTP 401 with an OpenAI-style error body. Listening beyond loopback without a
key prints a warning to stderr.

**Batching.** One worker thread owns the backend (backends hold one model and
are not thread-safe). Requests that arrive within ``batch_window_ms`` of the
oldest waiting one are gathered and sent to the backend as one mixed-adapter
``generate`` call per group of equal decoding settings, and each completion
is routed back to its HTTP request. Greedy requests group regardless of
``seed`` and ``top_p`` (greedy decoding ignores both); a sampled request runs
on its own, because rows of one sampled batch share one random stream, so it
gets exactly the completions it would get alone. If a gathered call fails, its
requests are retried one by one so that only the faulty one gets the error.
``batch_window_ms=0`` serves one request at a time. The queue is bounded:
beyond ``max_queued_requests`` waiting requests the server answers 503, which
OpenAI clients retry.

The :class:`Backend` interface takes one user message and an optional system
message per request, so a multi-turn conversation is flattened: system
messages become the system prompt and the turns are written out, labelled, in
one user message.
"""

import collections
import contextlib
import dataclasses
import hmac
import ipaddress
import itertools
import json
import logging
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from qd_llm.errors import QdLlmError
from qd_llm.inference.base import Backend, GenerationConfig, GenerationRequest

logger = logging.getLogger(__name__)

_MAX_BODY_BYTES = 16 * 2**20
_MAX_CHOICES = 16
_MAX_GATHERED_ROWS = 256  # rows per gathered backend call; bounds one call's latency
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


def is_loopback_host(host: str) -> bool:
    """Whether listening on ``host`` is reachable only from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "" (every interface) or a host name


@dataclasses.dataclass(eq=False)
class _Job:
    """One HTTP request's rows waiting for the worker; the handler waits on ``done``."""

    requests: list[GenerationRequest]
    config: GenerationConfig
    arrived: float = dataclasses.field(default_factory=time.monotonic)
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    texts: list[str] | None = None
    error: BaseException | None = None

    def finish(self, texts: list[str] | None = None, error: BaseException | None = None):
        self.texts, self.error = texts, error
        self.done.set()

    def batch_key(self):
        """Jobs with equal keys can share one backend call and get their solo outputs."""
        if self.config.temperature > 0:
            return self  # rows of one sampled batch share one random stream: run alone
        return dataclasses.replace(self.config, seed=0, top_p=1.0)  # both unused by greedy


class GenerationWorker:
    """Owns a backend in one thread and serves queued requests in gathered calls.

    Args:
        backend: Used only from the worker thread.
        batch_window_ms: How long to wait, after the oldest waiting request
            arrived, for more to join its backend call; 0 serves one request
            at a time.
        max_queued_requests: Waiting requests beyond which :meth:`submit`
            refuses with HTTP 503.

    Attributes:
        backend_calls: ``generate`` calls made so far.
    """

    def __init__(self, *, backend: Backend, batch_window_ms: float, max_queued_requests: int):
        if batch_window_ms < 0:
            raise QdLlmError(f"batch_window_ms must be >= 0, got {batch_window_ms}")
        if max_queued_requests < 1:
            raise QdLlmError(f"max_queued_requests must be >= 1, got {max_queued_requests}")
        self.backend = backend
        self.batch_window_s = batch_window_ms / 1000
        self.max_queued_requests = max_queued_requests
        self.backend_calls = 0
        self._pending: collections.deque[_Job] = collections.deque()
        self._changed = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="qd-llm-generate", daemon=True)
        self._thread.start()

    def submit(self, requests: Sequence[GenerationRequest], config: GenerationConfig) -> list[str]:
        """Queues ``requests`` and returns their completions once generated.

        Raises:
            RequestError: The queue is full or the server is shutting down (503).
            Exception: Whatever the backend raised for these requests.
        """
        job = _Job(list(requests), config)
        with self._changed:
            if self._closing:
                raise _unavailable("the server is shutting down")
            if len(self._pending) >= self.max_queued_requests:
                raise _unavailable(
                    f"the server is overloaded ({self.max_queued_requests} requests waiting); "
                    "retry later"
                )
            self._pending.append(job)
            self._changed.notify()
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.texts  # type: ignore[return-value]

    def close(self) -> None:
        """Finishes the call in progress, refuses what still waits, and joins the thread."""
        with self._changed:
            self._closing = True
            self._changed.notify()
        self._thread.join()

    def _run(self) -> None:
        while (jobs := self._gather()) is not None:
            groups: dict[object, list[_Job]] = {}
            for job in jobs:
                groups.setdefault(job.batch_key(), []).append(job)
            for group in groups.values():
                self._generate(group)

    def _gather(self) -> list[_Job] | None:
        """Waits for work, then takes the requests of the next backend call(s)."""
        with self._changed:
            while not self._pending and not self._closing:
                self._changed.wait()
            if not self._closing and self.batch_window_s > 0:
                deadline = self._pending[0].arrived + self.batch_window_s
                while (
                    not self._closing
                    and self._rows() < _MAX_GATHERED_ROWS
                    and (left := deadline - time.monotonic()) > 0
                ):
                    self._changed.wait(left)
            if self._closing:
                for job in self._pending:
                    job.finish(error=_unavailable("the server is shutting down"))
                self._pending.clear()
                return None
            jobs = [self._pending.popleft()]
            while (
                self.batch_window_s > 0
                and self._pending
                and len(self._pending[0].requests) + sum(len(j.requests) for j in jobs)
                <= _MAX_GATHERED_ROWS
            ):
                jobs.append(self._pending.popleft())
            return jobs

    def _rows(self) -> int:
        return sum(len(job.requests) for job in self._pending)

    def _generate(self, group: list[_Job]) -> None:
        """One backend call for ``group``; on failure, each job alone to find the culprit."""
        config = group[0].config if len(group) == 1 else group[0].batch_key()
        self.backend_calls += 1
        try:
            texts = self.backend.generate([r for job in group for r in job.requests], config)
        except Exception as e:
            if len(group) == 1:
                group[0].finish(error=e)
            else:
                for job in group:
                    self._generate([job])
            return
        start = 0
        for job in group:
            job.finish(texts=texts[start : start + len(job.requests)])
            start += len(job.requests)


def _unavailable(message: str) -> RequestError:
    return RequestError(
        HTTPStatus.SERVICE_UNAVAILABLE, message, error_type="server_error", code="overloaded"
    )


class ChatCompletionServer(ThreadingHTTPServer):
    """Serves a backend's base model and registered LoRA genomes over HTTP.

    Args:
        backend: What generates completions.
        base_model: The name clients use for the bare base model.
        adapters: Genome name to PEFT adapter folder; each name is also a model.
        host: Interface to listen on; keep 127.0.0.1 unless you mean to share it
            (then set ``api_key``).
        port: TCP port; 0 picks a free one (see :attr:`url`).
        default_max_tokens: ``max_tokens`` when a request leaves it out.
        api_key: If set, every route requires ``Authorization: Bearer <api_key>``.
        adapter_root: Enables the runtime load/unload routes, for adapter
            folders inside this folder only; None leaves them off.
        batch_window_ms: How long concurrent requests are gathered into one
            backend call; 0 serves one request at a time.
        max_queued_requests: Waiting requests beyond which the server answers 503.

    Raises:
        QdLlmError: A setting is invalid or the address cannot be bound.

    Example:
        >>> with ChatCompletionServer(backend=HFBackend(), base_model="smollm2") as server:
        ...     server.start()
        ...     client = OpenAIChatClient(base_url=server.url, model="smollm2")
    """

    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default listen backlog is 5: the 7th client connecting at
    # once had its SYN dropped and waited seconds, or was reset, before the
    # accept loop caught up (seen with 32 concurrent openai-backend requests).
    request_queue_size = 1024

    def __init__(
        self,
        *,
        backend: Backend,
        base_model: str,
        adapters: Mapping[str, str | Path] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        default_max_tokens: int = 512,
        api_key: str | None = None,
        adapter_root: str | Path | None = None,
        batch_window_ms: float = 10.0,
        max_queued_requests: int = 1024,
    ):
        adapters = {name: Path(folder) for name, folder in (adapters or {}).items()}
        for name, folder in adapters.items():
            problem = _adapter_problem(name, folder, base_model=base_model)
            if problem:
                raise QdLlmError(problem)
        if default_max_tokens < 1:
            raise QdLlmError(f"default_max_tokens must be >= 1, got {default_max_tokens}")
        if api_key is not None and not (
            api_key and api_key.isascii() and api_key.isprintable() and api_key == api_key.strip()
        ):
            raise QdLlmError("the API key must be printable ASCII, without surrounding spaces")
        if adapter_root is not None:
            adapter_root = Path(adapter_root).expanduser().resolve()
            if not adapter_root.is_dir():
                raise QdLlmError(f"adapter root {adapter_root} is not a folder")
        self.backend = backend
        self.base_model = base_model
        self.adapters = adapters
        self.default_max_tokens = default_max_tokens
        self.api_key = api_key
        self.adapter_root = adapter_root
        self.created = int(time.time())
        self._adapters_lock = threading.Lock()
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None
        try:
            super().__init__((host, port), _Handler)
        except OSError as e:
            raise QdLlmError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
        try:
            self.worker = GenerationWorker(
                backend=backend,
                batch_window_ms=batch_window_ms,
                max_queued_requests=max_queued_requests,
            )
        except QdLlmError:
            self.server_close()
            raise
        if api_key is None and not is_loopback_host(host):
            print(
                f"warning: serving on {host or 'every interface'} without an API key: anyone "
                "who can reach this port can generate"
                + (" and load adapters" if adapter_root else "")
                + "; set --api-key or QD_LLM_SERVE_API_KEY",
                file=sys.stderr,
                flush=True,
            )

    @property
    def url(self) -> str:
        """The base URL clients use, e.g. ``http://127.0.0.1:8000/v1``."""
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def model_names(self) -> list[str]:
        with self._adapters_lock:
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
        """Stops serving (if started), the worker and the socket; the backend is kept.

        A backend call in progress finishes first; requests still waiting get 503.
        """
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
            self._thread = None
        self.worker.close()
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
        The folder is kept resolved, so a symlink changed later cannot move it.

        Raises:
            RequestError: Runtime loading is off, the body is malformed, the
                folder is outside the adapter root or not an adapter, or the
                name is taken.
        """
        self._require_runtime_updates()
        name, path = _lora_fields(body, "lora_name", "lora_path")
        folder = Path(path).resolve()
        # The files too: PEFT would follow a symlinked weight file out of the root.
        if not all(p.resolve().is_relative_to(self.adapter_root) for p in _self_and_files(folder)):
            raise RequestError(
                HTTPStatus.FORBIDDEN,
                f"lora_path {path!r} is outside the adapter root {self.adapter_root}",
                error_type="invalid_request_error",
                code="adapter_path_forbidden",
            )
        problem = _adapter_problem(name, folder, base_model=self.base_model)
        if problem:
            raise _bad_request(problem, "invalid_adapter")
        with self._adapters_lock:
            if self.adapters.get(name, folder).resolve() != folder:
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
        self._require_runtime_updates()
        (name,) = _lora_fields(body, "lora_name")
        with self._adapters_lock:
            if self.adapters.pop(name, None) is None:
                raise RequestError(
                    HTTPStatus.NOT_FOUND,
                    f"the lora adapter {name!r} is not loaded",
                    error_type="invalid_request_error",
                    code="model_not_found",
                )
        return f"Success: LoRA adapter '{name}' removed successfully."

    def _require_runtime_updates(self) -> None:
        if self.adapter_root is None:
            raise RequestError(
                HTTPStatus.FORBIDDEN,
                "loading and unloading adapters at runtime is off; start the server with "
                "--adapter-root DIR to allow adapter folders inside DIR",
                error_type="invalid_request_error",
                code="runtime_lora_updating_disabled",
            )

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
        with self._adapters_lock:
            folder = self.adapters.get(model)
        if model == self.base_model:
            request_kwargs = {}
        elif folder is not None:
            request_kwargs = {"genome_id": model, "adapter": folder}
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
        texts = self.worker.submit(requests, config)
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


def _self_and_files(folder: Path) -> list[Path]:
    """``folder`` and, if it is one, the entries directly inside it."""
    return [folder, *folder.iterdir()] if folder.is_dir() else [folder]


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
        if not self._authorized():
            return
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            self._send_json(HTTPStatus.OK, self.server.models_response())
        else:
            self._send_error(self._not_found())

    def do_POST(self):
        if not self._authorized():
            return
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

    def _authorized(self) -> bool:
        """Checks the bearer token; if it is missing or wrong, answers 401 and says False."""
        key = self.server.api_key
        if key is None:
            return True
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        # compare_digest takes time independent of where the bytes differ.
        if scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode("latin-1"), key.encode("ascii")
        ):
            return True
        self.close_connection = True  # any request body is left unread
        self._send_error(
            RequestError(
                HTTPStatus.UNAUTHORIZED,
                "missing or incorrect API key: send the header 'Authorization: Bearer KEY'",
                error_type="invalid_request_error",
                code="invalid_api_key",
            ),
            headers={"WWW-Authenticate": "Bearer"},
        )
        return False

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

    def _send_error(self, error: RequestError, headers: Mapping[str, str] | None = None) -> None:
        payload = {"error": {"message": str(error), "type": error.error_type, "code": error.code}}
        self._send(error.status, json.dumps(payload).encode("utf-8"), "application/json", headers)

    def _send_json(self, status: HTTPStatus, payload: dict) -> None:
        self._send(status, json.dumps(payload).encode("utf-8"), "application/json")

    def _send(
        self,
        status: HTTPStatus,
        data: bytes,
        content_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(data)

    def log_message(self, format, *args):
        logger.debug("%s %s", self.address_string(), format % args)
