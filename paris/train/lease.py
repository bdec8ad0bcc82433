"""One training job per folder at a time: a lease in the run directory, so two machines never train expert k at once.

<job>/LEASE = {"owner": a random id, "host", "pid", "heartbeat": unix time}. A job takes the lease when there is
none, when the one there has not been renewed for LEASE_TTL_S (its owner died without letting go: preempted,
killed -9 on another machine), or when its owner is a process of this machine that no longer exists. It renews the
lease while it trains and removes it when it stops. It works on object stores, which have no atomic
create-if-absent: the lease is an ordinary file written whole, and a job reads it back SETTLE_S after writing it
and trains only if it still holds it (of two jobs that wrote at once, the later write wins and the other stops).
"""

from __future__ import annotations

import os
import socket
import time
import uuid

from paris.errors import ParisError
from paris.run import RunDir

LEASE_TTL_S = 10 * 60  # a lease not renewed for this long belongs to a dead job
RENEW_EVERY_S = 60
SETTLE_S = 0.5  # longer than one object-store round trip: another taker's write lands before we read back
SETTLE_LOCAL_S = 0.05  # a local file system shows a write at once


class Lease:
    def __init__(self, run: RunDir, folder: str, name: str):
        self.run, self.rel, self.name = run, f"{folder}/LEASE", name
        self.mine = {"owner": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid()}
        self.renewed = 0.0

    def acquire(self) -> None:
        held = self._read()
        if held is not None and held["owner"] != self.mine["owner"] and _alive(held):
            age = time.time() - held["heartbeat"]
            raise ParisError(f"{self.name} is being trained by process {held['pid']} on {held['host']} (last sign of "
                             f"life {age:.0f}s ago); wait for it or stop it. A dead job's lease lapses after "
                             f"{LEASE_TTL_S // 60} minutes, or delete {self.run.url}/{self.rel}")
        self._write()
        time.sleep(SETTLE_LOCAL_S if self.run.is_local else SETTLE_S)
        self._check()

    def renew(self) -> None:
        """Called every step; writes a heartbeat every RENEW_EVERY_S, after checking the lease is still ours."""
        if time.time() - self.renewed >= RENEW_EVERY_S:
            self._check()
            self._write()

    def release(self) -> None:
        held = self._read()
        if held is not None and held["owner"] == self.mine["owner"]:
            self.run.remove(self.rel)

    def _check(self) -> None:
        held = self._read()
        if held is None or held["owner"] != self.mine["owner"]:
            who = f"process {held['pid']} on {held['host']}" if held else "nobody (its lease was deleted)"
            raise ParisError(f"{self.name}: another job took over its lease ({who}); this one stops so that "
                             f"only one trains it")

    def _write(self) -> None:
        self.run.write_json(self.rel, {**self.mine, "heartbeat": time.time()})
        self.renewed = time.time()

    def _read(self) -> dict | None:
        if not self.run.exists(self.rel):
            return None
        try:
            held = self.run.read_json(self.rel)
            return held if {"owner", "host", "pid", "heartbeat"} <= held.keys() else None
        except ParisError:  # a damaged lease holds nothing
            return None


def _alive(held: dict) -> bool:
    """Whether the holder of a lease may still be training."""
    if time.time() - held["heartbeat"] > LEASE_TTL_S:
        return False
    if held["host"] == socket.gethostname():  # on this machine we can ask the system
        try:
            os.kill(held["pid"], 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # exists, owned by someone else
            return True
    return True
