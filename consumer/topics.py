"""Make sure topics exist before clients subscribe to them.

A consumer that subscribes to a topic that does not exist yet may not notice its creation
until its next metadata refresh (minutes), so the service and the demo create what they
use up front. Best effort: a cluster that forbids creation (ACLs) is left to its operators.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

log = logging.getLogger(__name__)


async def ensure_topics(bootstrap: str, names: Iterable[str], partitions: int = 4,
                        security: dict[str, Any] | None = None) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(security or {}))
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [n for n in dict.fromkeys(names) if n not in existing]
        if missing:
            await admin.create_topics(
                [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in missing]
            )
            log.info("created topics %s", ", ".join(missing))
    except TopicAlreadyExistsError:
        pass
    except KafkaError as exc:
        log.warning("could not check or create topics %s (%s); relying on the cluster", list(names), exc)
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
