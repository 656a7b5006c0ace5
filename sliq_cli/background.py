"""Background: a generator run in a named daemon thread, a bounded queue ahead of its consumer.

The consumer iterates it and gets the generator's exception re-raised where it stands. close() (the consumer's
`finally`) stops the thread and drops what it queued, which may hold device memory: without it, a consumer that
stopped early would leave the thread blocked on the full queue for good.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator


class Background:
    """Iterates `items` in a daemon thread named `name`, at most `depth` items ahead of the consumer."""

    def __init__(self, items: Generator, depth: int, name: str):
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(items,), daemon=True, name=name)
        self.thread.start()

    def _run(self, items: Generator) -> None:
        try:
            for item in items:  # close() is seen between items and while waiting on the full queue
                if not self._put(("item", item)) or self._stop.is_set():
                    return
            self._put(("done", None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which re-raises it
            self._put(("raise", e))
        finally:
            items.close()  # the generator's own cleanup (its `with` blocks) runs before the thread ends

    def _put(self, entry) -> bool:
        """Queue entry, waiting while the queue is full; False (entry dropped) once close() was called."""
        while not self._stop.is_set():
            try:
                self.queue.put(entry, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def __iter__(self) -> Background:
        return self

    def __next__(self):
        kind, value = self.queue.get()
        if kind == "raise":
            raise value
        if kind == "done":
            raise StopIteration
        return value

    def close(self, timeout: float | None = None) -> None:
        """Stop the thread and drop what it queued. An item in progress finishes first; a thread that outlives
        `timeout` is left to end on its own (a daemon)."""
        self._stop.set()
        self.thread.join(timeout)
        while True:
            try:
                self.queue.get_nowait()
            except queue.Empty:
                return
