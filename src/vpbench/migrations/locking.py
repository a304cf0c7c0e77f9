"""Lock timeouts, rehearsed: every migration statement waits at most ``lock_timeout`` for
its locks, and a step that timed out (SQLSTATE 55P03) is tried again after a pause that
doubles, with jitter, a bounded number of times. The live app then waits for a migration's
lock at most that long per attempt, instead of queueing behind it for as long as another
session holds a conflicting lock. Under a stall budget, ``lock_timeout`` is at most half the
budget: a request queued behind the migration's waiting lock is blocked for the wait plus
the hold, and a brief lock must not spend the whole budget in the queue. ``CONCURRENTLY``
statements keep the full timeout: nothing of the app queues behind their waits."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from vpbench.errors import MigrationError

log = logging.getLogger(__name__)

LOCK_NOT_AVAILABLE = "55P03"


@dataclass(frozen=True)
class LockPolicy:
    timeout_ms: int = 2_000
    """``lock_timeout`` of every migration statement"""
    concurrent_timeout_ms: int | None = None
    """... of a ``CONCURRENTLY`` statement, when not ``timeout_ms``: its waits (for the
    table's SHARE UPDATE EXCLUSIVE, for transactions older than the build) queue no
    request of the app, and a timeout leaves an invalid index behind instead of a retry"""
    attempts: int = 5
    """tries of a step (a transactional one as a whole, else statement by statement)"""
    first_pause_ms: int = 250
    """pause after the first timeout; it doubles (with jitter) up to ``max_pause_ms``"""
    max_pause_ms: int = 4_000

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def within(self, budget_ms: float) -> LockPolicy:
        """This policy with ``lock_timeout`` at most half of a stall budget, except for
        ``CONCURRENTLY`` statements, which keep theirs (no request queues behind them)."""
        return replace(
            self,
            timeout_ms=min(self.timeout_ms, max(int(budget_ms // 2), 1)),
            concurrent_timeout_ms=self.timeout_for(concurrent=True),
        )

    def timeout_for(self, *, concurrent: bool) -> int:
        """``lock_timeout`` in ms of a statement (a ``CONCURRENTLY`` one, or another)."""
        if concurrent and self.concurrent_timeout_ms is not None:
            return self.concurrent_timeout_ms
        return self.timeout_ms


DEFAULT_LOCKS = LockPolicy()


@dataclass(frozen=True)
class LockRetry:
    """One attempt that timed out waiting for a lock, and the pause before the next."""

    attempt: int
    line: int | None
    statement: str
    pause_ms: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_lock_timeout(error: BaseException) -> bool:
    return isinstance(error, MigrationError) and error.sqlstate == LOCK_NOT_AVAILABLE


def with_lock_retries(
    attempt: Callable[[], None],
    policy: LockPolicy,
    retries: list[LockRetry],
    *,
    concurrent: bool = False,
) -> None:
    """Run ``attempt`` until it does not time out on a lock, at most ``policy.attempts``
    times (once for a ``concurrent`` one, whose failure leaves an invalid index behind),
    appending each timed-out attempt to ``retries``."""

    def record(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        pause = state.next_action.sleep if state.next_action else 0.0
        line = error.line if isinstance(error, MigrationError) else None
        statement = error.message if isinstance(error, MigrationError) else ""
        retries.append(LockRetry(state.attempt_number, line, statement, pause * 1000))
        log.info(
            "lock timeout (attempt %d), retrying in %.0f ms", state.attempt_number, pause * 1e3
        )

    attempts = 1 if concurrent else policy.attempts
    try:
        for tried in Retrying(
            retry=retry_if_exception(is_lock_timeout),
            stop=stop_after_attempt(attempts),
            wait=wait_exponential_jitter(
                multiplier=policy.first_pause_ms / 1000,
                max=policy.max_pause_ms / 1000,
                jitter=policy.first_pause_ms / 1000,
            ),
            before_sleep=record,
            reraise=True,
        ):
            with tried:
                attempt()
    except MigrationError as exc:
        if not is_lock_timeout(exc):
            raise
        raise MigrationError(
            f"{exc.message} ({attempts} attempt{'s' if attempts > 1 else ''} of "
            f"lock_timeout {policy.timeout_for(concurrent=concurrent)} ms)",
            path=exc.path,
            line=exc.line,
            sqlstate=exc.sqlstate,
            hint="another session held a conflicting lock throughout; try again when it has "
            "ended, or allow more with --lock-timeout / --lock-attempts",
        ) from exc
