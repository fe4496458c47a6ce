"""The embedded queue (pacsfs://): a folder that several processes share, each message consumed exactly once."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from queue import Empty

import pytest
from celery import Celery
from celery.worker import state as worker_state

from shared import abandoned_files, doorbell, embedded_broker
from shared.queue import create_celery
from shared.settings import Settings

N = 200


@pytest.fixture
def queue_name() -> str:
    """A queue of its own: kombu keeps declared bindings in process-wide state across tests."""
    return f"pacs.test{uuid.uuid4().hex[:8]}"


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # whatever the transport writes stays in this test's folder
    return Settings(data_dir=tmp_path / "data", broker_url=None)  # embedded, whatever PACS_BROKER_URL says


@pytest.fixture
def app(settings: Settings) -> Celery:
    return create_celery(settings)


def files_in(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file()]


def message_files(settings: Settings) -> list[Path]:
    """What is left of messages: queued, claimed or half-written files (not the exchange tables)."""
    queue_dir = settings.embedded_queue_dir
    return files_in(queue_dir / "messages") + files_in(queue_dir / "processed")


def publish(app: Celery, queue_name: str, count: int) -> None:
    with app.connection() as connection:
        queue = connection.SimpleQueue(queue_name)
        for number in range(count):
            queue.put({"n": number})
        queue.close()


def consume(app: Celery, queue_name: str, seen: list[int], lock: threading.Lock, total: int,
            deadline: float) -> None:
    with app.connection() as connection:
        queue = connection.SimpleQueue(queue_name)
        try:
            while time.monotonic() < deadline:
                with lock:
                    if len(seen) >= total:
                        return
                try:
                    message = queue.get(timeout=0.1)
                except Empty:
                    continue
                message.ack()
                with lock:
                    seen.append(message.payload["n"])
        finally:
            queue.close()


def drain_with_two_consumers(app: Celery, queue_name: str, total: int, seconds: float = 60) -> list[int]:
    seen: list[int] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    consumers = [threading.Thread(target=consume, args=(app, queue_name, seen, lock, total, deadline))
                 for _ in range(2)]
    for consumer in consumers:
        consumer.start()
    for consumer in consumers:
        consumer.join()
    return seen


def test_the_embedded_broker_is_the_default(settings: Settings, app: Celery) -> None:
    assert settings.uses_embedded_broker
    assert app.conf.broker_url.startswith("pacsfs://")


def test_competing_consumers_see_every_message_exactly_once(settings: Settings, app: Celery,
                                                            queue_name: str) -> None:
    publish(app, queue_name, N)
    seen = drain_with_two_consumers(app, queue_name, N)
    counts = Counter(seen)
    assert set(counts) == set(range(N)), f"missing: {sorted(set(range(N)) - set(counts))[:10]}"
    assert [n for n, times in counts.items() if times > 1] == []
    assert message_files(settings) == []


def test_consumers_declaring_while_messages_arrive_see_each_once(settings: Settings, app: Celery,
                                                                  queue_name: str) -> None:
    """Three threads declare the same queue at once (one publishes right away): no message may find its binding
    known to the process but not yet in the table, and be dropped."""
    producer = threading.Thread(target=publish, args=(app, queue_name, N))
    producer.start()
    seen = drain_with_two_consumers(app, queue_name, N)
    producer.join()
    assert sorted(seen) == list(range(N))
    assert message_files(settings) == []


@pytest.mark.parametrize("name", [".{stamp}_abc.{queue}.msg.tmp", ".{stamp}_abc.{queue}.msg"])
def test_a_half_written_message_is_never_consumed(settings: Settings, app: Celery, queue_name: str,
                                                  name: str) -> None:
    publish(app, queue_name, 0)  # declares the queue and creates the folders
    half_written = settings.embedded_queue_dir / "messages" / name.format(stamp="0" * 17, queue=queue_name)
    half_written.write_bytes(b'{"body": "eyJuIjog')  # sorts before any real message
    publish(app, queue_name, 1)
    assert drain_with_two_consumers(app, queue_name, total=2, seconds=2) == [0]
    assert half_written.read_bytes() == b'{"body": "eyJuIjog'


def test_all_its_files_stay_under_the_data_dir(settings: Settings, app: Celery, queue_name: str,
                                               tmp_path: Path) -> None:
    publish(app, queue_name, 3)
    assert sorted(drain_with_two_consumers(app, queue_name, 3)) == [0, 1, 2]
    outside = [path for path in files_in(tmp_path) if settings.data_dir not in path.parents]
    assert outside == [], f"the embedded broker wrote outside the data dir (e.g. kombu's ./control): {outside}"


def test_a_worker_asked_to_stop_stops_waiting_for_messages(app: Celery, queue_name: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Celery's loop waits up to 2 s for a message before it looks at its stop flag; the embedded transport
    looks at that flag at every poll (a warm shutdown sets it to the exit code 0, which is falsy)."""
    waited: list[BaseException] = []
    with app.connection() as connection:
        connection.SimpleQueue(queue_name)  # declared and empty

        def wait_for_a_message() -> None:
            try:
                connection.drain_events()  # no timeout: only a message or the stop flag ends it
            except BaseException as exc:  # noqa: BLE001 - what ended the wait is the result
                waited.append(exc)

        waiter = threading.Thread(target=wait_for_a_message, daemon=True)
        waiter.start()
        time.sleep(0.3)
        assert waiter.is_alive() and not waited  # nothing to deliver: still waiting
        monkeypatch.setattr(worker_state, "should_stop", 0)
        waiter.join(timeout=10)
        assert not waiter.is_alive() and type(waited[0]).__name__ in ("timeout", "TimeoutError")


def test_a_waiting_consumer_is_woken_by_a_new_message_not_by_its_next_look(app: Celery, queue_name: str,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The consumer sleeps until the publisher rings (shared.doorbell): with its periodic look at the queue 60 s
    away, a message put by another connection is still taken at once."""
    monkeypatch.setattr(doorbell, "FALLBACK_SECONDS", 60.0)
    received: list[int] = []
    with app.connection() as consumer_connection:
        queue = consumer_connection.SimpleQueue(queue_name)

        def take_one() -> None:
            message = queue.get(timeout=30)
            message.ack()
            received.append(message.payload["n"])

        consumer = threading.Thread(target=take_one, daemon=True)
        consumer.start()
        time.sleep(0.3)  # asleep on its doorbell
        publish(app, queue_name, 1)
        consumer.join(timeout=10)
        queue.close()
    assert received == [0]


def test_an_idle_consumer_rarely_looks_at_the_queue(app: Celery, queue_name: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Waiting with nothing to take costs a look every FALLBACK_SECONDS (0.5 s), not one every 20 ms."""
    looks: list[str] = []
    real_get = embedded_broker.Channel._get

    def counted_get(channel: embedded_broker.Channel, queue: str) -> object:
        looks.append(queue)
        return real_get(channel, queue)

    monkeypatch.setattr(embedded_broker.Channel, "_get", counted_get)
    with app.connection() as connection:
        queue = connection.SimpleQueue(queue_name)
        with pytest.raises(Empty):
            queue.get(timeout=1.2)
        queue.close()
    assert 1 <= len(looks) <= 5


def test_a_consumed_message_file_is_kept_for_the_next_message(settings: Settings, app: Celery,
                                                               queue_name: str) -> None:
    """No inode is freed per message (shared.spare_files): the next messages are written into the files of the
    consumed ones, and read back whole even when shorter."""
    spare = settings.embedded_queue_dir / "spare"
    with app.connection() as connection:
        queue = connection.SimpleQueue(queue_name)
        for number in range(3):
            queue.put({"n": number, "padding": "x" * 200})
        for _ in range(3):
            queue.get(timeout=5).ack()
        inodes = {path.stat().st_ino for path in spare.iterdir()}
        assert len(inodes) == 3 and message_files(settings) == []
        time.sleep(0.3)  # a process lists the spare folder again at most every 0.2 s
        for number in range(3):
            queue.put({"n": number})
        assert list(spare.iterdir()) == []
        assert {path.stat().st_ino for path in message_files(settings)} == inodes
        payloads = [queue.get(timeout=5) for _ in range(3)]
        for message in payloads:
            message.ack()
        queue.close()
    assert sorted((message.payload["n"], len(message.payload)) for message in payloads) == [(0, 1), (1, 1), (2, 1)]


def test_temporary_files_a_killed_process_left_are_removed_by_the_next_channel(
        settings: Settings, app: Celery, queue_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    publish(app, queue_name, 1)  # declares the queue and creates the folders; one message waits
    folder = settings.embedded_queue_dir
    left = [folder / "messages" / f".00000000000000000_x.{queue_name}.msg.tmp",  # a message never renamed in place
            folder / "control" / f".{queue_name}.exchange.0123.tmp"]  # an exchange table never renamed in place
    for path in left:
        path.write_bytes(b"partial")
    publish(app, queue_name, 0)
    assert all(path.exists() for path in left)  # just written, as far as anyone can tell: a live writer's
    monkeypatch.setattr(abandoned_files, "ABANDONED_SECONDS", 0.0)
    publish(app, queue_name, 0)
    assert not any(path.exists() for path in left)
    assert (folder / "control" / ".exchanges.lock").exists()
    assert drain_with_two_consumers(app, queue_name, total=1, seconds=5) == [0]
