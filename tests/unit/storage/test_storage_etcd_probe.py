"""The etcd watch's hang detection on its own: a stream that stays quiet is asked for progress
after WATCH_PROBE_AFTER, and left WATCH_PROGRESS_TIMEOUT later if the member does not answer,
however long the store's request timeout is. The stream is a stand-in for grpc's call object
(read/write), so the timing is the store's own, with no etcd involved."""

from __future__ import annotations

import asyncio
from typing import Any

from openmhsm.storage.etcd import WATCH_PROBE_AFTER, WATCH_PROGRESS_TIMEOUT, EtcdStorage


class Stream:
    """A watch stream whose member answers a progress request only if `answers`."""

    def __init__(self, answers: bool) -> None:
        self.answers = answers
        self.written: list[Any] = []
        self._answer = asyncio.Event()

    async def read(self) -> str:
        await self._answer.wait()
        return "progress"

    async def write(self, request: Any) -> None:
        self.written.append(request)
        if self.answers:
            self._answer.set()


def probe(answers: bool) -> tuple[Stream, float, BaseException | str]:
    async def scenario() -> tuple[Stream, float, BaseException | str]:
        store = EtcdStorage(["127.0.0.1:9"], request_timeout=10)  # never dialled
        stream = Stream(answers)
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            got: BaseException | str = await store._next_or_hung(stream)
        except TimeoutError as exc:
            got = exc
        return stream, loop.time() - started, got

    return asyncio.run(scenario())


def test_a_quiet_stream_is_asked_for_progress_and_left_when_the_member_hangs() -> None:
    stream, took, got = probe(answers=False)
    assert isinstance(got, TimeoutError)
    assert [r.HasField("progress_request") for r in stream.written] == [True]
    bound = WATCH_PROBE_AFTER + WATCH_PROGRESS_TIMEOUT
    assert bound <= took < bound + 2  # not the store's 10 s request timeout


def test_a_member_that_answers_keeps_the_stream() -> None:
    stream, took, got = probe(answers=True)
    assert got == "progress"
    assert len(stream.written) == 1
    assert WATCH_PROBE_AFTER <= took < WATCH_PROBE_AFTER + 2
