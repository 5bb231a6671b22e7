"""The Kafka lag reader against a real broker: the backlog age follows the committed offset, read after read."""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from connectors.kafka_lag import GroupQuery, KafkaLagReader
from tests.integration.support import create_topic

BASE_MS = int(time.time() * 1000) - 3_600_000  # an hour ago, one second apart per offset


async def _commit(bootstrap: str, group: str, offsets: dict[TopicPartition, int]) -> None:
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await c.start()
    try:
        c.assign(list(offsets))
        await c.commit({tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()})
    finally:
        await c.stop()


async def _stamped_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """`topic` with 20 records per partition stamped BASE_MS + 1 s per offset (+ 100 s per partition number)."""
    await create_topic(bootstrap, topic, partitions=partitions)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for p in range(partitions):
            for i in range(20):
                await producer.send_and_wait(topic, b"x", partition=p, timestamp_ms=BASE_MS + i * 1000 + p * 100_000)
    finally:
        await producer.stop()


async def test_backlog_age_follows_the_committed_offset_across_reads(kafka_bootstrap: str,
                                                                     unique_name: str) -> None:
    topic = unique_name
    await _stamped_topic(kafka_bootstrap, topic, 2)  # partition 1 is 100 s younger at the same offset
    group = f"{unique_name}-g"
    query = GroupQuery(group, (topic,))
    reader = KafkaLagReader(kafka_bootstrap, head_refresh=0.0)  # every read fetches the moved heads
    tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    try:
        lag = (await reader.read([query]))[query]
        assert (lag.lag, lag.oldest_ms) == (40, BASE_MS), "nothing committed: from the log start"
        for moved in (3, 7, 15):
            await _commit(kafka_bootstrap, group, {tp0: moved, tp1: 2})
            lag = (await reader.read([query]))[query]
            assert lag.lag == (20 - moved) + 18
            assert lag.oldest_ms == BASE_MS + moved * 1000, f"head of partition 0 at offset {moved}"
        await _commit(kafka_bootstrap, group, {tp0: 20, tp1: 5})
        lag = (await reader.read([query]))[query]
        assert (lag.lag, lag.oldest_ms) == (15, BASE_MS + 5_000 + 100_000), "only partition 1 waits"
        assert reader._consumer.assignment() >= {tp0, tp1}
        assert reader._consumer.paused() >= {tp0, tp1}, "held partitions are paused between reads"
    finally:
        await reader.close()


async def test_a_moving_head_is_fetched_again_at_most_every_head_refresh(kafka_bootstrap: str,
                                                                         unique_name: str) -> None:
    """Between fetches the last head stands in: the age is too old by at most that much, never too young."""
    topic = unique_name
    await _stamped_topic(kafka_bootstrap, topic, 1)
    group = f"{unique_name}-g"
    query = GroupQuery(group, (topic,))
    tp = TopicPartition(topic, 0)
    reader = KafkaLagReader(kafka_bootstrap, head_refresh=1.5)
    try:
        await _commit(kafka_bootstrap, group, {tp: 2})
        assert (await reader.read([query]))[query].oldest_ms == BASE_MS + 2000
        fetches = reader.head_fetches
        await _commit(kafka_bootstrap, group, {tp: 6})
        lag = (await reader.read([query]))[query]
        assert (lag.lag, lag.oldest_ms) == (14, BASE_MS + 2000), "within the refresh: the last head stands in"
        assert reader.head_fetches == fetches, "no head fetch within the refresh"
        await asyncio.sleep(1.6)
        lag = (await reader.read([query]))[query]
        assert lag.oldest_ms == BASE_MS + 6000, "after the refresh: the real head"
        assert reader.head_fetches == fetches + 1
    finally:
        await reader.close()


async def test_reads_that_find_the_reader_unstarted_start_it_once(kafka_bootstrap: str, unique_name: str) -> None:
    """Reads that come while the reader is starting (a scaling wake-up's beside the periodic one): each answers,
    the clients start once. Before, a second start reached aiokafka's "Did you call `start` twice?" (or a second
    fetcher) and that read was lost. The reads are spread over the start, 2 ms apart, to land inside it."""
    topic = unique_name
    await _stamped_topic(kafka_bootstrap, topic, 1)
    query = GroupQuery(f"{unique_name}-g", (topic,))
    reader = KafkaLagReader(kafka_bootstrap)

    async def read_after(delay: float) -> int:
        await asyncio.sleep(delay)
        return (await reader.read([query], ages=False))[query].lag

    try:
        assert await asyncio.gather(*(read_after(i * 0.002) for i in range(40))) == [20] * 40
        fetchers = [t for t in asyncio.all_tasks() if "_fetch_requests_routine" in repr(t.get_coro())]
        assert len(fetchers) == 1, "one consumer fetcher: the reader started once"
    finally:
        await reader.close()
