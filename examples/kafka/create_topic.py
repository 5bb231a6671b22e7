"""Create a Kafka topic (the test broker does not auto-create topics): create_topic.py NAME [PARTITIONS]."""

import asyncio
import os
import sys

from aiokafka.admin import AIOKafkaAdminClient, NewTopic


async def main(name: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=os.environ.get("EVENTBUS_KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()
    print(f"created topic {name} with {partitions} partitions")


asyncio.run(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1))
