"""`nudgeflow send`: produce a JSONL file of events, keyed by user id where it has one.

Lines are not validated here: the worker validates every record and sends the
bad ones to the dead-letter topic with the reason, exactly as for any producer.
"""

from __future__ import annotations

import json
from pathlib import Path

from aiokafka import AIOKafkaProducer


def _key(line: bytes) -> bytes | None:
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    uid = obj.get("user_id") if isinstance(obj, dict) else None
    return uid.encode() if isinstance(uid, str) and uid else None


async def send_file(path: Path, *, broker: str, topic: str) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=broker, acks="all", linger_ms=5)
    await producer.start()
    sent = 0
    try:
        with path.open("rb") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                await producer.send(topic, line, key=_key(line))
                sent += 1
        await producer.flush()
    finally:
        await producer.stop()
    return sent
