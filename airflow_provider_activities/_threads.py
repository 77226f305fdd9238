"""Threads for pipelines (standard library only): a generator run ahead of its consumer, and a
map over a generator by several threads, in order.

Used by the hook's streams (pages fetched while the consumer writes) and by the export's file
reader (blocks inflated by one thread, converted by others, while the consumer spools the
previous one).
"""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def usable_cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)

_END = object()


def read_ahead(items: Iterator[T], depth: int, name: str = "peopleai-read-ahead") -> Generator[T, None, None]:
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


def ordered_map(function: Callable[[T], R], items: Iterator[T], workers: int, name: str) -> Generator[R, None, None]:
    """``function(item)`` of each item, in the items' order, computed by ``workers`` threads of
    their own, which keep working while the consumer handles the item before.

    Worth it where ``function`` spends most of its time with the GIL released (Arrow's parse and
    compute kernels): the items are then worked on in parallel, one per thread. At most
    ``workers + 1`` items are taken from ``items`` and not yet handed out; an exception of
    ``function`` is raised to the consumer at that item. Closing this generator cancels the items
    not started, waits for those in work and closes ``items``.

    :param function: applied to each item (it must be safe to call from several threads at once).
    :param items: the input, read in the consumer's thread.
    :param workers: threads working at once (at least one).
    :param name: the threads' name prefix.
    """
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix=name) as pool:
            pending: deque[Future[R]] = deque()
            try:
                for item in items:
                    pending.append(pool.submit(function, item))
                    if len(pending) > workers:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
            finally:
                for future in pending:
                    future.cancel()
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()
