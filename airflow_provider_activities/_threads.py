"""A generator run ahead of its consumer by a thread of its own (standard library only).

Used by the hook's streams (pages fetched while the consumer writes) and by the export's file
reader (blocks inflated while the consumer converts the previous one).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_END = object()


def read_ahead(items: Iterator[T], depth: int, name: str = "peopleai-read-ahead") -> Iterator[T]:
    """``items``, produced by a thread of their own up to ``depth`` items ahead of the consumer.

    The hook's page generator schedules the next requests only when it is asked for a page, so
    while the consumer converts and writes a batch no new request would start. Run in its own
    thread, it keeps ``max_concurrency`` requests in flight meanwhile and parks up to ``depth``
    finished pages. An exception in the producer is raised to the consumer. Closing this
    generator (the streams do when their loop ends, fails or is left) stops the producer at its
    next item; it closes ``items`` in its own thread (cancelling what it had scheduled, waiting
    for the requests in flight), and the close waits for it.

    :param items: a generator (it is closed by the producer thread).
    :param depth: items parked between producer and consumer.
    :param name: the producer thread's name.
    """
    handoff: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(item: Any, error: BaseException | None = None) -> bool:
        while not stop.is_set():
            try:
                handoff.put((item, error), timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_END)
        except BaseException as err:
            put(_END, err)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    producer = threading.Thread(target=produce, name=name, daemon=True)
    producer.start()
    try:
        while True:
            item, error = handoff.get()
            if error is not None:
                raise error
            if item is _END:
                return
            yield item
    finally:
        stop.set()
        if threading.current_thread() is not producer:  # (garbage collection may close this in the producer)
            producer.join()
