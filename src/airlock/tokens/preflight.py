"""The pre-flight context check. Before a request goes upstream, estimate what the provider will count:
the local count times (1 + the calibrated margin for that model and script). When the estimate plus
max_tokens would not fit the model's context window, answer 400 with how much it is over (reject), or
drop the oldest turns until it fits and record that it did (truncate).

Cost on the request path: none for a request that cannot be near its window. A byte-level tokenizer
never makes more tokens than the text has bytes, so when the body's size times (1 + the largest
margin) plus max_tokens fits, nothing is counted. Only requests close to the window are tokenized."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any

from airlock.config.schema import Config, ModelSpec
from airlock.config.schema import Preflight as PreflightConfig
from airlock.errors import ContextWindowExceeded
from airlock.store.drift import DriftReader
from airlock.tokens.chat import count_request, request_text
from airlock.tokens.drift import margins
from airlock.tokens.scripts import dominant_script, script_mix


@dataclass(frozen=True)
class Verdict:
    body: dict[str, Any] | None  # a truncated body to send instead, or None to send the original
    decision: dict[str, Any] | None  # what was decided and why, for the record


class Calibration:
    """Margins per (model, script), refreshed from the record in the background."""

    def __init__(self, cfg: PreflightConfig) -> None:
        self.cfg = cfg
        self._margins: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self.refreshed_at = 0.0

    def margin(self, model: str, script: str) -> tuple[float, str]:
        m = self._margins.get((model, script))
        if m is None:
            return self.cfg.default_margin, "default"
        return m, "calibrated"

    def largest(self, model: str) -> float:
        found = [m for (mod, _), m in self._margins.items() if mod == model]
        return max([self.cfg.default_margin, *found])

    def refresh(self, reader: DriftReader) -> None:
        since = time.time_ns() - int(self.cfg.calibration_window_s * 1e9)
        cells = margins(reader, since)
        fresh = {key: max(c.margin, 0.0) for key, c in cells.items() if c.margin is not None}
        with self._lock:
            self._margins = fresh
            self.refreshed_at = time.time()

    def set(self, model: str, script: str, margin: float) -> None:
        with self._lock:
            self._margins[(model, script)] = margin


class Preflight:
    def __init__(self, config: Config, calibration: Calibration | None = None) -> None:
        self.config = config
        self.cfg = config.tokens.preflight
        self.calibration = calibration or Calibration(self.cfg)
        self.checked = self.rejected = self.truncated = 0

    def applies(self, spec: ModelSpec) -> bool:
        return self.cfg.mode != "off" and spec.context_window is not None and spec.tokenizer is not None

    def may_exceed(self, spec: ModelSpec, upstream_model: str, body: dict[str, Any], raw_size: int) -> bool:
        """Whether the request needs counting at all. No byte-level tokenizer makes more tokens than the
        text has bytes, so a body whose size (with the largest margin) plus max_tokens fits cannot exceed."""
        if not self.applies(spec) or spec.context_window is None:
            return False
        max_tokens = _max_tokens(body, self.cfg.default_max_tokens)
        return raw_size * (1 + self.calibration.largest(upstream_model)) + max_tokens > spec.context_window

    def check(self, spec: ModelSpec, upstream_model: str, body: dict[str, Any]) -> Verdict:
        """Count, estimate and decide; call only when `may_exceed`. Raises ContextWindowExceeded."""
        window = spec.context_window
        if window is None or spec.tokenizer is None:
            return Verdict(None, None)
        max_tokens = _max_tokens(body, self.cfg.default_max_tokens)
        self.checked += 1
        tok = self.config.tokenizer(spec.tokenizer)
        estimate, local, margin, source, script = self._estimate(tok, upstream_model, body)
        if estimate + max_tokens <= window:
            return Verdict(
                None,
                {
                    "kind": "preflight",
                    "verdict": "fits",
                    "estimate": estimate,
                    "local": local,
                    "margin": margin,
                    "margin_source": source,
                    "script": script,
                    "max_tokens": max_tokens,
                    "window": window,
                },
            )
        over = estimate + max_tokens - window
        facts = {
            "estimate": estimate,
            "local": local,
            "margin": round(margin, 4),
            "margin_source": source,
            "script": script,
            "max_tokens": max_tokens,
            "window": window,
            "over_by": over,
        }
        if self.cfg.mode == "truncate":
            truncated = self._truncate(tok, upstream_model, body, max_tokens, window)
            if truncated is not None:
                new_body, dropped, new_estimate = truncated
                self.truncated += 1
                return Verdict(
                    new_body,
                    {
                        "kind": "preflight",
                        "verdict": "truncated",
                        "dropped_messages": dropped,
                        "estimate_after": new_estimate,
                        **facts,
                    },
                )
        self.rejected += 1
        raise ContextWindowExceeded(
            f"the request is about {estimate} tokens ({local} counted locally with {spec.tokenizer}, plus a "
            f"{margin:.1%} {source} margin for {script} text) and max_tokens is {max_tokens}: {estimate + max_tokens} "
            f"tokens, {over} over {spec.name}'s context window of {window}",
            **facts,
        )

    def _estimate(self, tok: Any, model: str, body: dict[str, Any]) -> tuple[int, int, float, str, str]:
        local = count_request(tok, body)
        script = dominant_script(script_mix(request_text(body)))
        margin, source = self.calibration.margin(model, script)
        return math.ceil(local * (1 + margin)), local, margin, source, script

    def _truncate(
        self, tok: Any, model: str, body: dict[str, Any], max_tokens: int, window: int
    ) -> tuple[dict[str, Any], int, int] | None:
        """Drop the oldest turns after any leading system messages, keeping the last message, until it fits."""
        messages = body.get("messages")
        if not isinstance(messages, list):
            return None
        head = 0
        while head < len(messages) and isinstance(messages[head], dict) and messages[head].get("role") == "system":
            head += 1
        kept = list(messages)
        dropped = 0
        while len(kept) - head > 1:
            del kept[head]
            dropped += 1
            # A tool result whose call was dropped would be rejected by the provider: drop it too.
            while len(kept) - head > 1 and isinstance(kept[head], dict) and kept[head].get("role") == "tool":
                del kept[head]
                dropped += 1
            if isinstance(kept[head], dict) and kept[head].get("role") == "tool":
                return None  # only a tool result whose call is gone would remain: not a valid conversation
            candidate = {**body, "messages": kept}
            estimate = self._estimate(tok, model, candidate)[0]
            if estimate + max_tokens <= window:
                return candidate, dropped, estimate
        return None


def _max_tokens(body: dict[str, Any], default: int) -> int:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return default
