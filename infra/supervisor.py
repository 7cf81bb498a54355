"""The processes `skillcert up` runs, kept running: a child that exits is started again, with a limit.

Each child runs in a session of its own, so the terminal's Ctrl-C reaches only `up`, which then
stops them in order: first what takes requests (the API), then what applies and records (the
consumers, the checkpointer), then the relay, so nothing is left half-published; the servers last.
If `up` itself is killed (SIGKILL, the OOM killer), each child is sent SIGTERM by the kernel.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


def ends_with_parent() -> Callable[[], None] | None:
    """A preexec_fn (Linux) that makes the child get SIGTERM when the process starting it dies: a
    SIGKILLed `up` leaves no relay, worker, API or broker running behind it, holding its ports. The
    function is looked up before the fork; the child only calls it. Linux ties the signal to the
    starting thread, not the process: start children from a thread that lives as long as the process
    (`up` starts them from its main thread)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    import os

    prctl, parent = ctypes.CDLL(None, use_errno=True).prctl, os.getpid()

    def in_child() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before that took effect
            os._exit(1)

    return in_child


RESTARTS = 5  # a child may be started again this many times ...
WITHIN = 600.0  # ... within this many seconds; after that, everything stops
STOP_GRACE = 8.0  # seconds a child has to stop after SIGTERM before it is killed


@dataclass
class Child:
    name: str
    command: list[str]
    process: subprocess.Popen[bytes] | None = None
    restarts: deque[float] = field(default_factory=deque)


class Supervisor:
    def __init__(self, env: dict[str, str], say: Callable[[str], None]) -> None:
        self.env, self.say = env, say
        self.children: list[Child] = []

    def start(self, name: str, *args: str) -> None:
        child = Child(name, [sys.executable, "-m", "infra.cli", *args])
        self.children.append(child)
        self._spawn(child)

    def _spawn(self, child: Child) -> None:
        child.process = subprocess.Popen(child.command, env=self.env, start_new_session=True,
                                         preexec_fn=ends_with_parent())  # fmt: skip

    def alive(self) -> bool:
        return all(c.process is not None and c.process.poll() is None for c in self.children)

    def watch(self) -> str | None:
        """Start again any child that has exited; the reason to give up, when one keeps exiting."""
        for child in self.children:
            assert child.process is not None
            code = child.process.poll()
            if code is None:
                continue
            now = time.monotonic()
            while child.restarts and now - child.restarts[0] > WITHIN:
                child.restarts.popleft()
            if len(child.restarts) >= RESTARTS:
                return f"{child.name} exited (code {code}) {RESTARTS + 1} times within {WITHIN / 60:.0f} minutes"
            child.restarts.append(now)
            self.say(f"{child.name} exited (code {code}); starting it again "
                     f"({len(child.restarts)} of {RESTARTS} within {WITHIN / 60:.0f} minutes)")  # fmt: skip
            self._spawn(child)
        return None

    def stop(self, order: list[str]) -> None:
        """SIGTERM each child in `order` (then any other), waiting for each; kill what overstays."""
        ranked = sorted(self.children, key=lambda c: order.index(c.name) if c.name in order else len(order))
        for child in ranked:
            p = child.process
            if p is None or p.poll() is not None:
                continue
            started = time.monotonic()
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(STOP_GRACE)
                self.say(f"{child.name} stopped ({time.monotonic() - started:.1f} s)")
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                self.say(f"{child.name} did not stop within {STOP_GRACE:.0f} s; killed")
