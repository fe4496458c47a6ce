"""EventPublisher: events leave the C-STORE path in batches and survive a broker that is down for a while."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from services.scp.publisher import EventPublisher
from tests.node import wait_until

TASK = "pacs.index_instances"
LINGER = 0.02  # a batch's wait for more events, unless a test says otherwise


class FakeBroker:
    """A send_batch that records what it is given and refuses while told to."""

    def __init__(self, failures: int = 0) -> None:
        self.failures_left = failures
        self.attempts = 0
        self.batches: list[tuple[str, list[dict[str, object]]]] = []
        self._lock = threading.Lock()

    def __call__(self, task_name: str, payloads: list[dict[str, object]]) -> None:
        with self._lock:
            self.attempts += 1
            if self.failures_left != 0:
                self.failures_left -= 1
                raise ConnectionError("broker down")
            self.batches.append((task_name, list(payloads)))

    def delivered(self) -> list[object]:
        with self._lock:
            return [payload["n"] for _, payloads in self.batches for payload in payloads]


@pytest.fixture
def publishers() -> Iterator[list[EventPublisher]]:
    started: list[EventPublisher] = []
    yield started
    for publisher in started:
        publisher.stop(flush_seconds=0)


def started(publishers: list[EventPublisher], broker: FakeBroker, linger: float = LINGER,
            **options: float) -> EventPublisher:
    publisher = EventPublisher(broker, linger, **options)
    publisher.start()
    publishers.append(publisher)
    return publisher


def test_every_submitted_event_is_sent_once(publishers: list[EventPublisher]) -> None:
    broker = FakeBroker()
    publisher = started(publishers, broker)
    for n in range(500):
        publisher.submit(TASK, {"n": n})
    wait_until(lambda: len(broker.delivered()) == 500, 10, "all events sent")
    assert sorted(broker.delivered()) == list(range(500))  # type: ignore[type-var]
    assert publisher.published == 500 and publisher.dropped == 0


def test_batches_never_exceed_max_batch(publishers: list[EventPublisher]) -> None:
    broker = FakeBroker()
    publisher = EventPublisher(broker, LINGER, max_batch=7)
    for n in range(100):
        publisher.submit(TASK, {"n": n})  # buffered before the thread runs: full batches are possible
    publisher.start()
    publishers.append(publisher)
    wait_until(lambda: len(broker.delivered()) == 100, 10, "all events sent")
    sizes = [len(payloads) for _, payloads in broker.batches]
    assert max(sizes) == 7
    assert len(sizes) < 100  # events do travel together


def test_events_of_different_tasks_go_in_their_own_batches(publishers: list[EventPublisher]) -> None:
    broker = FakeBroker()
    publisher = started(publishers, broker)
    publisher.submit(TASK, {"n": 1})
    publisher.submit("pacs.record_duplicate", {"n": 2})
    wait_until(lambda: len(broker.delivered()) == 2, 10, "both events sent")
    assert {(task, tuple(p["n"] for p in payloads)) for task, payloads in broker.batches} == {
        (TASK, (1,)), ("pacs.record_duplicate", (2,))}


def test_a_batch_waits_for_the_events_that_arrive_within_its_linger(publishers: list[EventPublisher]) -> None:
    broker = FakeBroker()
    publisher = started(publishers, broker, linger=1.0)
    publisher.submit(TASK, {"n": 1})
    time.sleep(0.3)
    publisher.submit(TASK, {"n": 2})
    wait_until(lambda: len(broker.delivered()) == 2, 10, "both events sent")
    assert broker.batches == [(TASK, [{"n": 1}, {"n": 2}])]


def test_a_full_batch_leaves_without_waiting_for_the_linger(publishers: list[EventPublisher]) -> None:
    broker = FakeBroker()
    publisher = started(publishers, broker, linger=60, max_batch=5)
    for n in range(4):
        publisher.submit(TASK, {"n": n})
    time.sleep(0.3)
    assert broker.delivered() == []  # not full: waiting for more
    publisher.submit(TASK, {"n": 4})
    wait_until(lambda: broker.delivered() == [0, 1, 2, 3, 4], 5, "the full batch sent at once")
    for n in range(5, 12):
        publisher.submit(TASK, {"n": n})
    wait_until(lambda: len(broker.delivered()) == 10, 5, "the next full batch sent at once")
    assert [len(payloads) for _, payloads in broker.batches] == [5, 5]
    time.sleep(0.3)
    assert len(broker.delivered()) == 10  # the last two wait for more, or for a hurry


def test_a_batch_leaves_once_its_stream_pauses(publishers: list[EventPublisher]) -> None:
    broker = FakeBroker()
    publisher = started(publishers, broker, linger=60, quiet_seconds=0.5)
    for n in range(5):  # 50 ms apart: well within the quiet time, the batch keeps gathering
        publisher.submit(TASK, {"n": n})
        time.sleep(0.05)
    wait_until(lambda: broker.delivered() == [0, 1, 2, 3, 4], 10, "the batch sent after the pause, not the linger")
    assert [len(payloads) for _, payloads in broker.batches] == [5]
    publisher.submit(TASK, {"n": 5})  # an instance sent alone
    wait_until(lambda: len(broker.delivered()) == 6, 10, "the lone event sent after the pause")
    assert [len(payloads) for _, payloads in broker.batches] == [5, 1]


def test_hurry_sends_what_is_buffered_without_waiting_for_more(publishers: list[EventPublisher]) -> None:
    broker = FakeBroker()
    publisher = started(publishers, broker, linger=60)
    publisher.submit(TASK, {"n": 1})
    time.sleep(0.2)
    assert broker.delivered() == []  # waiting for more
    publisher.hurry()
    wait_until(lambda: broker.delivered() == [1], 5, "the event sent at once")


def test_after_a_hurry_the_next_batch_waits_for_more_again(publishers: list[EventPublisher]) -> None:
    broker = FakeBroker()
    publisher = started(publishers, broker, linger=60)
    publisher.submit(TASK, {"n": 1})
    publisher.hurry()
    wait_until(lambda: broker.delivered() == [1], 5, "the hurried event sent")
    publisher.submit(TASK, {"n": 2})
    time.sleep(0.3)
    assert broker.delivered() == [1]
    publisher.hurry()
    wait_until(lambda: broker.delivered() == [1, 2], 5, "the second event sent when hurried")


def test_a_hurry_with_nothing_buffered_does_not_cut_the_next_batch_short(publishers: list[EventPublisher]) -> None:
    broker = FakeBroker()
    publisher = started(publishers, broker, linger=60)
    publisher.hurry()  # an association that stored nothing ended
    publisher.submit(TASK, {"n": 1})
    time.sleep(0.3)
    assert broker.delivered() == []


def test_it_keeps_retrying_while_the_broker_refuses_then_delivers_everything(
    publishers: list[EventPublisher],
) -> None:
    broker = FakeBroker(failures=3)
    publisher = started(publishers, broker)
    for n in range(50):
        publisher.submit(TASK, {"n": n})
    wait_until(lambda: len(broker.delivered()) == 50, 20, "events sent once the broker is back")
    assert broker.attempts > 3
    assert sorted(broker.delivered()) == list(range(50))  # type: ignore[type-var]
    assert publisher.dropped == 0


def test_a_full_buffer_drops_and_counts_what_does_not_fit() -> None:
    publisher = EventPublisher(FakeBroker(), LINGER, max_buffer=5)  # not started: nothing drains the buffer
    for n in range(8):
        publisher.submit(TASK, {"n": n})
    assert (publisher.backlog, publisher.dropped) == (5, 3)


def test_stop_flushes_what_is_buffered() -> None:
    broker = FakeBroker()
    publisher = EventPublisher(broker, LINGER, max_batch=10)
    for n in range(95):
        publisher.submit(TASK, {"n": n})
    publisher.start()
    publisher.stop(flush_seconds=5)
    assert sorted(broker.delivered()) == list(range(95))  # type: ignore[type-var]
    assert publisher.backlog == 0


def test_stop_gives_up_at_its_deadline_when_the_broker_stays_down() -> None:
    broker = FakeBroker(failures=-1)  # never accepts
    publisher = EventPublisher(broker, LINGER)
    publisher.start()
    publisher.submit(TASK, {"n": 1})
    wait_until(lambda: broker.attempts >= 1, 5, "a first attempt")
    publisher.stop(flush_seconds=0.5)
    attempts_at_stop = broker.attempts
    time.sleep(0.5)
    assert broker.attempts == attempts_at_stop  # the publisher has really stopped
    assert broker.delivered() == []
