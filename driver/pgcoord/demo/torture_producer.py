"""The torture's campaign producer: it enqueues the run's messages while the faults
strike, one chunk per second of load, each under a key of its own
(`campaign_enqueue_once`) and LEAD seconds before its first message falls due. A call
whose connection fails (a terminate, a restart) is made again with the same key on a new
connection, as a producer does that cannot tell whether its call landed. Some chunks,
drawn from the seed, first go through a proxy that lets the call commit and then loses
its answer (`lostanswer`): the call made again must find its chunk enqueued."""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import psycopg

from pgcoord import CampaignEnqueued
from pgcoord.campaigns import campaign_enqueue_once

from .facts import Chunk
from .lostanswer import LostAnswer
from .server import Link, connect

LEAD = 2.0  # seconds a chunk is enqueued before its first message falls due
CUT_SHARE = 0.25  # of the chunks whose first call's answer the proxy loses (at least one)
PATIENCE = 30.0  # seconds a chunk's call is made again while its connection fails


class Producer:
    """Enqueues `items` (`per_chunk` of them due in each second of load) into the run
    `run_id` of the server at `url`, in the background once started; `chunks` holds what
    each keyed enqueue was answered, `errors` what broke the thread."""

    def __init__(
        self, url: str, run_id: int, items: Sequence[dict[str, Any]], per_chunk: int, seed: int
    ) -> None:
        self.url = url
        self.run_id = run_id
        self.stopping = threading.Event()
        self.parts = [items[i : i + per_chunk] for i in range(0, len(items), per_chunk)]
        rng = random.Random(seed)
        cut = {i for i in range(len(self.parts)) if rng.random() < CUT_SHARE}
        self.cut = cut or {rng.randrange(len(self.parts))}
        self.chunks: list[Chunk] = []
        self.errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, daemon=True, name="producer")
        self._started = 0.0

    @property
    def enqueued(self) -> int:
        """Messages of the chunks answered so far."""
        return sum(c.size for c in self.chunks)

    def start(self) -> None:
        self._started = time.perf_counter()
        self._thread.start()

    def join(self, timeout: float) -> bool:
        """Wait for the last chunk; whether every chunk was answered."""
        self._thread.join(timeout)
        return not self._thread.is_alive() and not self.errors

    def stop(self) -> None:
        self.stopping.set()
        if self._thread.is_alive():
            self._thread.join(PATIENCE)

    def _run(self) -> None:
        link = Link(self.url, patience=PATIENCE, stopping=self.stopping)
        proxy = LostAnswer(self.url)
        try:
            for n, items in enumerate(self.parts):
                pause = self._started + n - LEAD - time.perf_counter()
                if self.stopping.wait(max(0.0, pause)):
                    return
                self.chunks.append(self._enqueue(link, proxy, f"chunk-{n}", items, n in self.cut))
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            proxy.close()
            link.close()

    def _enqueue(
        self, link: Link, proxy: LostAnswer, key: str, items: Sequence[dict[str, Any]], cut: bool
    ) -> Chunk:
        """Enqueue `items` under `key` until a call is answered: first through the proxy,
        losing the answer, when `cut`."""
        failed, lost = 0, False
        if cut:
            with contextlib.suppress(psycopg.OperationalError), connect(proxy.url) as conn:
                proxy.arm()
                try:
                    answer = self._call(key, items, conn)
                except psycopg.OperationalError:
                    failed, lost = 1, proxy.lost.is_set()
                else:  # the answer came through after all: no cut, as the check will see
                    return Chunk(key, len(items), answer, failed, lost)

        def failure(exc: psycopg.OperationalError) -> None:
            nonlocal failed
            failed += 1

        answer = link.call(partial(self._call, key, items), failure)
        return Chunk(key, len(items), answer, failed, lost)

    def _call(
        self, key: str, items: Sequence[dict[str, Any]], conn: psycopg.Connection[Any]
    ) -> CampaignEnqueued:
        return campaign_enqueue_once(conn, self.run_id, key, items)
