"""What a batch produces: messages for the producer, column by column, and the offsets
they cover (committed once all of them are acknowledged: consumer/checkpoint.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from aiokafka.structs import TopicPartition

Headers = list[tuple[str, bytes]]


class Message(NamedTuple):
    """One message of a BatchOutput, for reading it (tests, tools); the service sends columns."""

    topic: str
    key: bytes | None
    value: bytes
    headers: Headers | None


@dataclass
class Outgoing:
    """Messages for one topic, column by column: no object per message on the hot path."""

    topic: str
    keys: list[bytes | None]
    values: list[bytes]
    arrival_ms: npt.NDArray[np.int64]  # Kafka timestamps of the input records
    #: mode code per message, for the end-to-end latency metric; None for dead letters
    modes: npt.NDArray[np.int8] | None = None
    #: partition per message (the key's, as Kafka's default partitioner picks it); None:
    #: left to the producer
    partitions: npt.NDArray[np.int32] | None = None
    headers: list[Headers] | None = None

    def __len__(self) -> int:
        return len(self.values)

    @property
    def dead_letters(self) -> bool:
        """Dead letters, not predictions (which carry headers too: the link's adaptation)."""
        return self.modes is None


@dataclass
class BatchOutput:
    messages: list[Outgoing] = field(default_factory=list)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)  # next offset to commit

    def each(self) -> list[Message]:
        """Every message, in the order produced."""
        return [Message(o.topic, o.keys[i], o.values[i], o.headers[i] if o.headers else None)
                for o in self.messages for i in range(len(o))]
