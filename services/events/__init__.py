"""Flywheel's events over Kafka: topics, codec, producer and the at-least-once consume loop."""

from services.events.codec import InvalidEvent, decode, encode, new_meta
from services.events.consumer import ConsumeLoop, ConsumerConfig
from services.events.producer import EventProducer
from services.events.topics import TOPICS, Topic, ensure_topics

__all__ = [
    "TOPICS",
    "ConsumeLoop",
    "ConsumerConfig",
    "EventProducer",
    "InvalidEvent",
    "Topic",
    "decode",
    "encode",
    "ensure_topics",
    "new_meta",
]
