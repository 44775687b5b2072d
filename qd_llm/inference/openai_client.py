"""A minimal client for OpenAI-compatible chat completion servers.

Speaks the ``/v1/chat/completions`` and ``/v1/models`` endpoints that OpenAI,
vLLM, llama.cpp, Ollama and ``qd-llm serve`` share, using only the standard
library. Transient failures (connection errors, timeouts, HTTP 429 and 5xx) are
retried with exponential backoff; anything else the server refuses (HTTP 4xx)
is raised at once as :class:`~qd_llm.errors.QdLlmError` with the server's own
message, because retrying a bad key or an unknown model cannot help.

Settings come from the constructor or, when left out, from the environment:

=========================  ==============================================
``QD_LLM_OPENAI_BASE_URL``  base URL, e.g. ``http://127.0.0.1:8000/v1``
``OPENAI_BASE_URL``         used when the variable above is unset
``QD_LLM_OPENAI_MODEL``     the model name sent with every request
``OPENAI_API_KEY``          sent as a bearer token (optional for local servers)
=========================  ==============================================
"""

import json
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence

from qd_llm.errors import QdLlmError

logger = logging.getLogger(__name__)

BASE_URL_ENV = ("QD_LLM_OPENAI_BASE_URL", "OPENAI_BASE_URL")
MODEL_ENV = "QD_LLM_OPENAI_MODEL"
API_KEY_ENV = "OPENAI_API_KEY"

Message = Mapping[str, str]  # {"role": "system" | "user" | "assistant", "content": str}


class _Transient(Exception):
    """A failure worth retrying; the message says what happened.

    Attributes:
        retry_after: Seconds the server asked us to wait (HTTP Retry-After), if any.
    """

    def __init__(self, message: str, *, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def _first_env(names: Sequence[str]) -> str | None:
    return next((os.environ[n] for n in names if os.environ.get(n)), None)


def normalize_base_url(url: str) -> str:
    """Returns ``url`` without a trailing slash, with ``/v1`` added to a bare host.

    ``http://host:8000`` becomes ``http://host:8000/v1``; a URL that already has
    a path (``https://api.example.com/v1``, ``http://host/openai/v1``) is kept.
    """
    parsed = urllib.parse.urlsplit(url.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise QdLlmError(f"OpenAI base URL must look like http://host:port/v1, got {url!r}")
    path = parsed.path.rstrip("/") or "/v1"
    return urllib.parse.urlunsplit((parsed.scheme, parsed.netloc, path, "", ""))


class OpenAIChatClient:
    """Sends chat completion requests to an OpenAI-compatible server.

    Args:
        base_url: Server base URL including ``/v1``; defaults to
            ``$QD_LLM_OPENAI_BASE_URL`` then ``$OPENAI_BASE_URL``.
        model: Model name; defaults to ``$QD_LLM_OPENAI_MODEL``.
        api_key: Bearer token; defaults to ``$OPENAI_API_KEY`` (may be absent).
        timeout_s: Seconds to wait for one HTTP response.
        max_retries: Retries after the first attempt for transient failures.
        backoff_s: Wait before the first retry; doubled on every further retry.
        max_backoff_s: Upper bound on one wait (also caps a server's Retry-After).

    Raises:
        QdLlmError: No base URL or model was given or found in the environment.
    """

    def __init__(
        self,
        *,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 4,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
    ):
        base_url = base_url or _first_env(BASE_URL_ENV)
        if not base_url:
            raise QdLlmError(
                "no OpenAI-compatible server given: pass base_url or set "
                f"{' or '.join(BASE_URL_ENV)} (e.g. http://127.0.0.1:8000/v1 from `qd-llm serve`)"
            )
        model = model or os.environ.get(MODEL_ENV)
        if not model:
            raise QdLlmError(f"no model name given: pass model or set {MODEL_ENV}")
        if timeout_s <= 0 or max_retries < 0 or backoff_s < 0 or max_backoff_s < 0:
            raise QdLlmError("timeout_s must be > 0 and retry settings must be >= 0")
        self.base_url = normalize_base_url(base_url)
        self.model = model
        self.api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s

    def __repr__(self) -> str:
        return f"OpenAIChatClient(base_url={self.base_url!r}, model={self.model!r})"

    def chat(
        self,
        messages: Sequence[Message],
        *,
        temperature: float = 0.0,
        top_p: float = 1.0,
        max_tokens: int = 512,
        stop: Sequence[str] = (),
        seed: int | None = None,
    ) -> str:
        """Returns the assistant's reply to ``messages``.

        Args:
            messages: The conversation, oldest first.
            temperature: 0 for greedy decoding.
            top_p: Nucleus sampling mass; 1 (the default) is not sent.
            max_tokens: Tokens to generate at most.
            stop: Strings that end the reply (not included in it).
            seed: Sampling seed, for servers that honour it.

        Raises:
            QdLlmError: The server refused the request (4xx), kept failing after
                every retry, or answered without a message.
        """
        body: dict = {
            "model": self.model,
            "messages": [dict(m) for m in messages],
            "temperature": temperature,
            "max_tokens": max_tokens,
        }
        if top_p != 1.0:
            body["top_p"] = top_p
        if stop:
            body["stop"] = list(stop)
        if seed is not None:
            body["seed"] = seed
        reply = self._request("POST", "/chat/completions", body)
        try:
            content = reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise QdLlmError(
                f"{self.base_url}/chat/completions answered without a message: "
                f"{json.dumps(reply)[:200]}"
            ) from None
        return content or ""

    def list_models(self) -> list[str]:
        """Returns the model names the server offers (``GET /v1/models``)."""
        reply = self._request("GET", "/models", None)
        try:
            return [entry["id"] for entry in reply["data"]]
        except (KeyError, TypeError):
            raise QdLlmError(f"{self.base_url}/models answered without a model list") from None

    def load_lora_adapter(self, name: str, folder: str) -> None:
        """Asks the server to serve the LoRA adapter in ``folder`` as model ``name``.

        The runtime-loading route of ``vllm serve`` (started with
        ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``) and ``qd-llm serve``; the
        server must see ``folder`` at the same path.

        Raises:
            QdLlmError: The server refused (e.g. no such route or folder).
        """
        self._request(
            "POST", "/load_lora_adapter", {"lora_name": name, "lora_path": folder}, json_reply=False
        )

    def _request(
        self, method: str, path: str, body: dict | None, *, json_reply: bool = True
    ) -> dict:
        url = self.base_url + path
        for attempt in range(self.max_retries + 1):
            try:
                return self._send_once(method, url, body, json_reply=json_reply)
            except _Transient as e:
                if attempt == self.max_retries:
                    raise QdLlmError(
                        f"{url} failed {attempt + 1} time(s), last: {e}; is the server running?"
                    ) from None
                delay = min(self.backoff_s * 2**attempt, self.max_backoff_s)
                if e.retry_after is not None:
                    delay = min(max(delay, e.retry_after), self.max_backoff_s)
                logger.warning("%s: %s; retrying in %.1f s", url, e, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _send_once(self, method: str, url: str, body: dict | None, *, json_reply: bool) -> dict:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as e:
            message = _error_message(e.read())
            if e.code == 429 or e.code >= 500:
                raise _Transient(
                    f"HTTP {e.code}: {message}",
                    retry_after=_retry_after(e.headers.get("Retry-After")),
                ) from None
            raise QdLlmError(f"{url} refused the request (HTTP {e.code}): {message}") from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
            raise _Transient(str(getattr(e, "reason", e))) from None
        if not json_reply:  # e.g. vLLM's "Success: LoRA adapter ... added" plain text
            return {"text": raw.decode("utf-8", "replace")}
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            raise _Transient(f"response is not JSON: {raw[:120]!r}") from None


def _error_message(raw: bytes) -> str:
    """The ``error.message`` of an OpenAI-style error body, else the body's start."""
    try:
        obj = json.loads(raw)
        error = obj.get("error", obj)
        return str(error.get("message", error) if isinstance(error, dict) else error)
    except (json.JSONDecodeError, AttributeError):
        return raw[:200].decode("utf-8", "replace")


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date; the exponential backoff is used instead
