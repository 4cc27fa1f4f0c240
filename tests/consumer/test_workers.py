"""How `pba run --workers N` shares one host's settings among its workers."""

from __future__ import annotations

import pytest

from consumer.config import ServiceConfig, validate
from consumer.workers import worker_configs


def test_each_worker_is_one_member_with_its_share_of_the_cores() -> None:
    workers = worker_configs(ServiceConfig(bootstrap="k:9092", workers=2), cores=4)
    assert [w.workers for w in workers] == [1, 1]
    assert [w.inference_threads for w in workers] == [2, 2]


def test_more_workers_than_cores_still_get_one_inference_thread_each() -> None:
    workers = worker_configs(ServiceConfig(bootstrap="k:9092", workers=3), cores=2)
    assert [w.inference_threads for w in workers] == [1, 1, 1]


def test_inference_threads_given_are_each_workers_own() -> None:
    workers = worker_configs(ServiceConfig(bootstrap="k:9092", workers=2, inference_threads=3), cores=2)
    assert [w.inference_threads for w in workers] == [3, 3]


def test_each_worker_serves_metrics_on_a_port_of_its_own_unless_they_are_off() -> None:
    on = worker_configs(ServiceConfig(bootstrap="k:9092", workers=3, metrics_port=9308), cores=2)
    assert [w.metrics_port for w in on] == [9308, 9309, 9310]
    off = worker_configs(ServiceConfig(bootstrap="k:9092", workers=3, metrics_port=0), cores=2)
    assert [w.metrics_port for w in off] == [0, 0, 0]


def test_static_membership_ids_differ_between_workers() -> None:
    # two running members with one group_instance_id would fence each other off
    workers = worker_configs(ServiceConfig(bootstrap="k:9092", workers=2, group_instance_id="pod-a"), cores=2)
    assert [w.group_instance_id for w in workers] == ["pod-a-0", "pod-a-1"]
    plain = worker_configs(ServiceConfig(bootstrap="k:9092", workers=2), cores=2)
    assert [w.group_instance_id for w in plain] == [None, None]


def test_everything_else_is_the_same_for_every_worker() -> None:
    config = ServiceConfig(bootstrap="k:9092", workers=2, group_id="g", mode="datacenter", batch_max=64)
    for worker in worker_configs(config, cores=2):
        assert (worker.bootstrap, worker.group_id, worker.mode, worker.batch_max) == (
            "k:9092", "g", "datacenter", 64)


@pytest.mark.parametrize(("settings", "problem"), [
    ({"workers": 0}, "workers must be at least 1, got 0"),
    ({"workers": 3, "metrics_port": 65534}, "runs past port 65535"),
])
def test_worker_counts_that_cannot_work_are_named(settings: dict[str, int], problem: str) -> None:
    assert any(problem in p for p in validate(ServiceConfig(bootstrap="k:9092", **settings)))


def test_the_last_port_may_be_the_highest_one() -> None:
    assert validate(ServiceConfig(bootstrap="k:9092", workers=2, metrics_port=65534)) == []
