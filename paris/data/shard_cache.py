"""A bounded cache of decoded shards, filled by background threads.

Reads are I/O (a disk, an object store), which releases the GIL, so a couple of threads keep the next
window of shards arriving while the accelerator trains on the current one. At most `capacity` shards are
held; the least recently used is dropped first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Generic, Iterable, TypeVar

Value = TypeVar("Value")


class ShardCache(Generic[Value]):
    def __init__(self, load: Callable[[int], Value], capacity: int, threads: int = 2):
        self.load, self.capacity = load, capacity
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="paris-shards")
        self._futures: OrderedDict[int, Future] = OrderedDict()
        self._lock = threading.Lock()

    def prefetch(self, shards: Iterable[int]) -> None:
        """Start loading these shards (those not already held or on their way)."""
        for shard in shards:
            self._future(shard)

    def get(self, shard: int) -> Value:
        return self._future(shard).result()  # a failed load raises its error here, in the training thread

    def _future(self, shard: int) -> Future:
        with self._lock:
            if shard in self._futures:
                self._futures.move_to_end(shard)
            else:
                self._futures[shard] = self._pool.submit(self.load, shard)
                while len(self._futures) > self.capacity:
                    self._futures.popitem(last=False)
            return self._futures[shard]

    def __len__(self) -> int:
        return len(self._futures)
