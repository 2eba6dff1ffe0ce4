"""The Faust app factory: one place that says how a worker talks to Kafka.

There is no module-level app: tests, the bench and `nudgeflow dev` build as many as they
need, each from resolved settings. Why each knob has its value: docs/performance.md
("Producing", "Consumer") and docs/reliability.md ("Sessions").
"""

from __future__ import annotations

import faust

from nudgeflow.config.settings import WorkerSettings
from nudgeflow.pipeline import consumer
from nudgeflow.pipeline.loop_consumer import LoopConsumerThread

# Several records per event (state, audit, triggers): let them share requests.
PRODUCER_LINGER_MS = 5

# Faust queues table changelog writes in a 100-message buffer and stalls the stream
# ("producer buffer full") each time it fills; a few writes per event fill it fast.
PRODUCER_BUFFER_MESSAGES = 2000


def create_app(settings: WorkerSettings) -> faust.App:
    app = consumer.App(
        settings.group_id,
        broker=[f"kafka://{b.strip()}" for b in settings.broker.split(",")],
        store="rocksdb://",
        datadir=str(settings.data_dir),
        web_enabled=False,
        canonical_url=settings.advertised_url or f"http://{settings.web_host}:{settings.web_port}",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        table_standby_replicas=settings.standby_replicas,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_linger_ms=PRODUCER_LINGER_MS,
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        stream_wait_empty=False,
        # A crashed worker's partitions move after 10 s, not Faust's default 60 s.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        autodiscover=False,
        topic_disable_leader=True,
    )
    app.producer.buffer.max_messages = PRODUCER_BUFFER_MESSAGES
    if settings.consumer_on_loop:
        app.consumer_thread = LoopConsumerThread
    return app
