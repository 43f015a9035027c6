"""Reflection LMs for template evolution: a ``str -> str`` callable, the policy itself, or an
OpenAI-compatible chat endpoint (standard library only), with failures as one error type so a
training run can skip an evolution instead of crashing."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Generate = Callable[[list[str]], list[str]]


class ReflectionLMError(RuntimeError):
    """The reflection LM cannot answer (endpoint unreachable, HTTP error, malformed reply)."""


def _as_text(prompt: str | Sequence[Mapping[str, Any]]) -> str:
    """GEPA may pass chat messages; a text-only LM gets their contents joined."""
    if isinstance(prompt, str):
        return prompt
    return "\n\n".join(str(m.get("content", "")) for m in prompt)


class OpenAIReflectionLM:
    """An OpenAI-compatible chat endpoint (``POST {base}/v1/chat/completions``) as a ``str -> str`` LM.

    Any failure to get a reply raises :class:`ReflectionLMError` naming the URL, never a bare
    socket error, so a caller can skip the rescue instead of crashing a training run.
    """

    def __init__(self, url: str, model: str = "default", api_key: str | None = None,
                 timeout: float = 120.0, temperature: float = 0.7, max_tokens: int = 1024) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"url must be an http(s) URL, got {url!r}")
        if not timeout > 0 or not max_tokens >= 1 or not temperature >= 0:
            raise ValueError("timeout must be > 0, max_tokens >= 1 and temperature >= 0")
        base = url.rstrip("/")
        if base.endswith("/chat/completions"):
            self.endpoint = base
        elif base.endswith("/v1"):
            self.endpoint = base + "/chat/completions"
        else:
            self.endpoint = base + "/v1/chat/completions"
        self.model, self.api_key, self.timeout = model, api_key, float(timeout)
        self.temperature, self.max_tokens = float(temperature), int(max_tokens)
        self.calls = 0

    def _open(self, request: urllib.request.Request, timeout: float) -> bytes:
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - http(s) only
                return response.read()
        except urllib.error.HTTPError as err:
            detail = err.read()[:200].decode("utf-8", "replace")
            raise ReflectionLMError(f"reflection endpoint {self.endpoint} answered HTTP {err.code}: "
                                    f"{detail}") from err
        except (urllib.error.URLError, OSError, TimeoutError) as err:
            reason = getattr(err, "reason", err)
            raise ReflectionLMError(f"reflection endpoint {self.endpoint} is unreachable: {reason}") from err

    def ping(self, timeout: float = 5.0) -> None:
        """Raise :class:`ReflectionLMError` when nothing listens at the endpoint (any HTTP answer,
        even an error status, proves something does)."""
        request = urllib.request.Request(self.endpoint.rsplit("/chat/completions", 1)[0] + "/models",
                                         headers=self._headers())
        try:
            self._open(request, timeout)
        except ReflectionLMError as err:
            if isinstance(err.__cause__, urllib.error.HTTPError):
                return
            raise

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def __call__(self, prompt: str | Sequence[Mapping[str, Any]]) -> str:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        body = json.dumps({"model": self.model, "messages": messages, "temperature": self.temperature,
                           "max_tokens": self.max_tokens}).encode("utf-8")
        request = urllib.request.Request(self.endpoint, data=body, headers=self._headers(), method="POST")
        raw = self._open(request, self.timeout)
        self.calls += 1
        try:
            return str(json.loads(raw)["choices"][0]["message"]["content"])
        except (ValueError, KeyError, IndexError, TypeError) as err:
            raise ReflectionLMError(f"reflection endpoint {self.endpoint} sent a reply that is not a chat "
                                    f"completion: {raw[:200]!r}") from err


def make_reflection_lm(spec: Any, policy: Generate | None = None,
                       **endpoint_kwargs: Any) -> Callable[[Any], str]:
    """A ``str -> str`` reflection LM from a callable, ``"policy"`` (the task LM) or an endpoint URL."""
    if isinstance(spec, str):
        if spec == "policy":
            if policy is None or not callable(policy):
                raise ValueError("reflection_lm='policy' needs a callable policy")
            return lambda prompt: policy([_as_text(prompt)])[0]
        if spec.startswith(("http://", "https://")):
            return OpenAIReflectionLM(spec, **endpoint_kwargs)
        raise ValueError(f"reflection_lm must be a callable, 'policy' or an http(s) URL, got {spec!r}")
    if callable(spec):
        return spec
    raise TypeError("reflection_lm must be a callable, 'policy' or an http(s) URL, "
                    f"got {type(spec).__name__}")


__all__ = ["ReflectionLMError", "OpenAIReflectionLM", "make_reflection_lm"]
