"""Make sure topics exist before clients subscribe to them.

A consumer that subscribes to a topic that does not exist yet may not notice its creation
until its next metadata refresh (minutes), so the service and the demo create what they
use up front. Best effort: a cluster that forbids creation (ACLs, policies) is left to
its operators, with a warning that names each topic and the broker's reason.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

log = logging.getLogger(__name__)

#: replicas of a topic created here: three where the cluster has three brokers (acks=all
#: then survives a broker loss, and a min.insync.replicas of 2 can be met), fewer on a
#: smaller cluster
MAX_REPLICATION = 3


async def ensure_topics(bootstrap: str, names: Iterable[str], partitions: int = 4,
                        security: dict[str, Any] | None = None) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(security or {}))
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [n for n in dict.fromkeys(names) if n not in existing]
        if missing:
            brokers = len((await admin.describe_cluster())["brokers"])
            replication = max(1, min(MAX_REPLICATION, brokers))
            response = await admin.create_topics(
                [NewTopic(n, num_partitions=partitions, replication_factor=replication) for n in missing]
            )
            report_created(response.to_object()["topic_errors"], partitions, replication)
    except KafkaError as exc:
        log.warning("could not check or create topics %s (%s); relying on the cluster", list(names), exc)
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


def report_created(results: Sequence[dict[str, Any]], partitions: int, replication: int) -> list[str]:
    """Log what a CreateTopics answer says, per topic; returns the topics it created.
    The broker answers each topic on its own, so one refusal does not hide the others."""
    created, refused = [], []
    for result in results:
        code = result["error_code"]
        if code == 0:
            created.append(result["topic"])
        elif code != TopicAlreadyExistsError.errno:  # created meanwhile by someone else
            reason = result.get("error_message") or for_code(code).__name__
            refused.append(f"{result['topic']}: {reason}")
    if created:
        log.info("created topics %s (%d partitions, replication factor %d)",
                 ", ".join(created), partitions, replication)
    if refused:
        log.warning("could not create topics (%s); create them yourself or allow auto-creation",
                    "; ".join(refused))
    return created
