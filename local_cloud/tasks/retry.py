"""A queue's RetryConfig: its defaults, its checks, and when a failed task is tried again.

The fields and their meaning are RetryConfig's
(https://cloud.google.com/tasks/docs/reference/rest/v2/projects.locations.queues#RetryConfig):

- ``maxAttempts``: attempts per task, the first included; -1 is unlimited.
- ``maxRetryDuration``: how long after its first attempt a failed task may still be retried;
  0 is unlimited. Cloud Tasks gives up only when both limits are reached. Read here as: the
  task is given up once every limit that is set (attempts other than -1, a duration other than
  0) is reached, and never when neither is set, which is what the reference says of each case
  it names (the default queue stops after 100 attempts; -1 with 0 retries until the task's
  retention ends).
- ``minBackoff``, ``maxBackoff``, ``maxDoublings``: the n-th retry waits minBackoff doubled
  (n - 1) times while n - 1 <= maxDoublings, then grows linearly by minBackoff * 2^maxDoublings
  a retry, and never waits more than maxBackoff. The reference's example: 10s, 300s and 3
  doublings retry after 10s, 20s, 40s, 80s, 160s, 240s, 300s, 300s...

A queue created without them gets the defaults: 100 attempts, backoff from 0.1 s to 3600 s,
16 doublings, no duration limit. The REST reference says only "Cloud Tasks will pick the
default" and names no number; these are the values widely reported for a queue created
without one, not read from a Google page, so they are worth checking against a real queue
(``gcloud tasks queues describe``). Proto3 JSON cannot tell a field set to 0
from one left out, so 0 (or "0s") takes the default too, as the service does. The reference says
minBackoff and maxBackoff are truncated to the second, yet its own default minBackoff is 0.1 s;
they are kept to the microsecond here, so short backoffs stay short locally.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from local_cloud.tasks.wire import MICROS, format_duration, parse_duration
from model_server.errors import invalid

_INT32_MAX = 2 ** 31 - 1


@dataclass(frozen=True)
class RetryPolicy:
    """A RetryConfig, checked, with every field set; times in microseconds."""

    max_attempts: int = 100
    max_retry_duration_us: int = 0
    min_backoff_us: int = MICROS // 10
    max_backoff_us: int = 3600 * MICROS
    max_doublings: int = 16

    @classmethod
    def from_json(cls, config: Mapping[str, Any] | None, base: "RetryPolicy | None" = None,
                  field: str = "retryConfig") -> "RetryPolicy":
        """The policy a RetryConfig's JSON asks for; fields it leaves out come from `base`
        (Cloud Tasks' defaults unless given)."""
        base = base or cls()
        config = config or {}
        max_attempts = config.get("maxAttempts") or base.max_attempts
        if not isinstance(max_attempts, int) or isinstance(max_attempts, bool) or max_attempts < -1:
            raise invalid(f"{field}.maxAttempts must be a whole number >= -1 (-1: unlimited), got {max_attempts!r}")
        max_doublings = config.get("maxDoublings") or base.max_doublings
        if not isinstance(max_doublings, int) or isinstance(max_doublings, bool) or max_doublings < 0:
            raise invalid(f"{field}.maxDoublings must be a whole number >= 0, got {max_doublings!r}")
        durations = {}
        for name, default in (("maxRetryDuration", base.max_retry_duration_us),
                              ("minBackoff", base.min_backoff_us), ("maxBackoff", base.max_backoff_us)):
            text = config.get(name)
            micros = parse_duration(text, f"{field}.{name}") if text else 0
            if micros < 0:
                raise invalid(f"{field}.{name} must not be negative, got {text!r}")
            durations[name] = micros or default
        if durations["minBackoff"] > durations["maxBackoff"]:
            raise invalid(f"{field}.minBackoff ({format_duration(durations['minBackoff'])}) must not exceed "
                          f"maxBackoff ({format_duration(durations['maxBackoff'])})")
        return cls(max_attempts=max_attempts, max_retry_duration_us=durations["maxRetryDuration"],
                   min_backoff_us=durations["minBackoff"], max_backoff_us=durations["maxBackoff"],
                   max_doublings=max_doublings)

    def to_json(self) -> dict:
        """The RetryConfig's JSON, as a queue reports it (a zero duration is left out, as proto3
        JSON leaves out a default)."""
        config: dict[str, Any] = {"maxAttempts": self.max_attempts}
        if self.max_retry_duration_us:
            config["maxRetryDuration"] = format_duration(self.max_retry_duration_us)
        config["minBackoff"] = format_duration(self.min_backoff_us)
        config["maxBackoff"] = format_duration(self.max_backoff_us)
        config["maxDoublings"] = self.max_doublings
        return config

    def backoff_us(self, retry: int) -> int:
        """How long the `retry`-th retry (1 for the one after the first attempt) waits."""
        if retry < 1:
            raise ValueError(f"retries are counted from 1, got {retry}")
        if retry - 1 <= self.max_doublings:
            wait = self.min_backoff_us << (retry - 1)
        else:
            wait = (self.min_backoff_us << self.max_doublings) * (retry - self.max_doublings)
        return min(wait, self.max_backoff_us)

    def gives_up(self, attempts: int, first_attempt_us: int, now_us: int) -> bool:
        """Whether a task that has failed `attempts` times, the first at `first_attempt_us`, is
        given up rather than retried."""
        limits = []
        if self.max_attempts != -1:
            limits.append(attempts >= self.max_attempts)
        if self.max_retry_duration_us:
            limits.append(now_us - first_attempt_us >= self.max_retry_duration_us)
        return bool(limits) and all(limits)
