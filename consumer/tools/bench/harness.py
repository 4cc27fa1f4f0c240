"""`pba bench`'s parts: the service's speed against the only honest yardstick, ONNX
Runtime alone.

The parts run one after another, on the same machine:
  ceiling     ONNX Runtime alone on the shipped model, across batch sizes (median of
              repeats), in each (sessions x threads) configuration that uses every core
              (sessions in processes of their own, side by side); the best is the
              ceiling every ratio is taken against (ceiling.py)
  naive       the full service path with one call per event (batch 1)
  ingest      decode + window update per event, no inference
  adaptation  a forecast of 256 links' full windows with and without the per-link
              adaptation (us per event, interleaved, on one inference lane)
  memory      bytes per tracked link with many links
  end_to_end  events pre-loaded in the embedded broker, consumed by `pba run` as M members x
              T threads (every shape that uses the cores; --threads fixes one member);
              model-sourced predictions per second from the output records' timestamps
  latency     each M x T shape of end_to_end, events produced live at half of the best
              shape's end-to-end rate (or at given rates: a sweep finds the highest one whose
              p99 stays inside the mode's budget); time from each event's Kafka timestamp to its
              prediction's record timestamp (p50/p95/p99); and its floor: the same stream
              echoed through the broker without the service
Ratios to the ceiling are what to compare between machines; absolute figures only with
the machine named.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from consumer.clients import FETCH_MAX_WAIT_MS, PRODUCER_LINGER_MS
from consumer.config import ServiceConfig
from consumer.metrics import Metrics
from consumer.processor import RecordProcessor
from consumer.run import tune_garbage_collection
from consumer.service import POLL_TIMEOUT_MS
from consumer.tools.bench import load
from consumer.tools.bench.ceiling import best as best_of
from consumer.tools.bench.ceiling import ceilings, configurations, rate
from consumer.tools.broker import EmbeddedBroker
from predictor.adaptation import AdaptationRules
from predictor.forecaster import Forecaster
from predictor.link_predictor import LinkPredictor, models_for_mode
from predictor.modes import BUDGET_S, WINDOW_STEPS, mode_code
from predictor.runtime import SessionSettings, cpu_description, load_models
from training.evaluate import adaptation_cost


def service_processor(mode: str, settings: SessionSettings, max_links: int = 1_000_000,
                      adaptation: AdaptationRules | None = AdaptationRules()) -> RecordProcessor:
    """What `pba run` runs on a batch, with the shipped models (adaptation=None: without
    the per-link adaptation, for scripts/adaptation-cost.py)."""
    models = load_models(None, models_for_mode(mode), settings)
    link_predictor = LinkPredictor(Forecaster(models), mode, max_links, adaptation=adaptation)
    return RecordProcessor(link_predictor, ServiceConfig(mode=mode), Metrics())


def naive(mode: str, settings: SessionSettings, links: int = 50, seconds: float = 3.0) -> float:
    """One event at a time through decode, window, one ONNX call, encode."""
    steps = WINDOW_STEPS[mode_code(mode)]
    processor = service_processor(mode, settings)
    records = load.records(load.events(links, steps + 400, mode))
    processor.observe_history(records[: links * steps])  # windows full: every call runs the model
    rest = iter(records[links * steps:])
    return rate(lambda: processor.process([next(rest)]), 1, seconds, 1)


def ingest(mode: str, settings: SessionSettings, links: int = 10_000, per_link: int = 20,
           repeats: int = 3) -> float:
    """Decode and window update only (what a rebuild does), events/s: the median of
    `repeats` passes, each into fresh windows (one pass moved by 1.6x between runs on
    the noisy development machine)."""
    records = load.records(load.events(links, per_link, mode))
    rates = []
    for _ in range(repeats):
        processor = service_processor(mode, settings)
        started = time.perf_counter()
        processor.observe_history(records)
        rates.append(len(records) / (time.perf_counter() - started))
    return statistics.median(rates)


def memory_per_link(mode: str, links: int = 1_000_000, chunk: int = 50_000) -> float:
    """Resident bytes per tracked link (window arrays, ids and index)."""
    gc.collect()
    before = _rss()
    fallback_only = Forecaster(load_models(None, (), SessionSettings(), allow_fallback=True))
    link_predictor = LinkPredictor(fallback_only, mode, links)
    chunk = min(chunk, links)  # a chunk over the cap would only measure evictions
    values = np.full((chunk, 5), 10.0, dtype=np.float32)
    for start in range(0, links, chunk):
        ids = [f"link-{i:09d}" for i in range(start, start + chunk)]
        link_predictor.observe(ids, np.full(chunk, 1.0), values)
    gc.collect()
    per_link = (_rss() - before) / links
    del link_predictor
    return per_link


def _rss() -> int:
    with open(f"/proc/{os.getpid()}/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def end_to_end(bootstrap: str, mode: str, settings: SessionSettings, links: int, events: int,
                     run: str, members: int = 1) -> dict[str, float]:
    """Events pre-loaded, then `members` `pba run` processes in one group consume them;
    model-sourced predictions per second from the output records' own timestamps (the
    members' group join counts in it), read once the group has committed the input."""
    steps = WINDOW_STEPS[mode_code(mode)]
    per_link = max(steps + 20, events // links)
    messages = load.events(links, per_link, mode)
    inp, out = await load.topics(bootstrap, run)
    await load.produce(bootstrap, inp, messages)
    with load.service(bootstrap, run, mode, settings, members) as service:
        await load.consumed(bootstrap, f"g-{run}", inp, 900, service)
    records = await load.collect(bootstrap, out, len(messages), 120)
    model_ts = sorted(r.timestamp for r in records if b'"source":"model"' in r.value)
    span = max((model_ts[-1] - model_ts[0]) / 1000.0, 1e-3) if len(model_ts) > 1 else float("nan")
    all_ts = sorted(r.timestamp for r in records)
    return {
        "events": len(messages),
        "predictions": len(records),
        "model_predictions": len(model_ts),
        "model_predictions_per_s": len(model_ts) / span,
        "all_predictions_per_s": len(records) / max((all_ts[-1] - all_ts[0]) / 1000.0, 1e-3),
    }


async def latency(bootstrap: str, mode: str, settings: SessionSettings, links: int, rate: float,
                  seconds: float, run: str, members: int = 1) -> dict[str, float]:
    """Events at `rate`/s into a running service (`members` x settings' threads) with full
    windows; per event, the time from its record's timestamp to its prediction's record
    timestamp."""
    steps = WINDOW_STEPS[mode_code(mode)]
    per_link = steps + int(rate * seconds / links) + 1
    messages = load.events(links, per_link, mode)
    warm = links * steps
    inp, out = await load.topics(bootstrap, run)
    await load.produce(bootstrap, inp, messages[:warm])
    with load.service(bootstrap, run, mode, settings, members) as service:
        await load.collect(bootstrap, out, warm, 300, service)
        sent = await load.produce_at(bootstrap, inp, messages[warm:], rate)
        records = await load.collect(bootstrap, out, len(messages), 120, service)
    return load.latencies(rate, sent, records)


async def latency_floor(bootstrap: str, links: int, rate: float, seconds: float,
                        run: str) -> dict[str, float]:
    """The same live stream echoed through the broker without the service: a consumer
    and a producer with `pba run`'s settings re-publish each record as it arrives. What
    Kafka alone costs at this rate on this machine; the latency above it is the service's."""
    messages = load.events(links, int(rate * seconds / links) + 1, "datacenter")
    inp, out = await load.topics(bootstrap, run)
    consumer = AIOKafkaConsumer(inp, bootstrap_servers=bootstrap, group_id=f"g-{run}",
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                fetch_max_wait_ms=FETCH_MAX_WAIT_MS)
    echo = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=PRODUCER_LINGER_MS)
    await consumer.start()
    await echo.start()

    async def echo_all() -> None:
        left = len(messages)
        while left:
            for records in (await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS, max_records=1024)).values():
                for r in records:
                    await echo.send(out, r.value, key=r.key)
                left -= len(records)
        await echo.flush()

    try:
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=100)
        echoing = asyncio.create_task(echo_all())
        sent = await load.produce_at(bootstrap, inp, messages, rate)
        await asyncio.wait_for(echoing, 120)
    finally:
        await consumer.stop()
        await echo.stop()
    return load.latencies(rate, sent, await load.collect(bootstrap, out, len(messages), 120))


PARTS = ("naive", "ingest", "adaptation", "memory", "end_to_end", "latency")


def run_bench(mode: str = "internet", links: int = 500, events: int = 160_000,
              precision: str = "float", threads: int = 0, memory_links: int = 1_000_000,
              parts: tuple[str, ...] = PARTS, log: Any = print,
              latency_rates: tuple[float, ...] = ()) -> dict[str, Any]:
    """Run the chosen parts. Latency runs every shape at half of the best shape's end_to_end
    rate (issue #21's yardstick: is half of what the host takes end to end held inside the
    budget?), so it brings that part along, unless latency_rates fixes the rate (to compare
    settings at one load) or sweeps several (to find the load up to which p99 stays inside
    the mode's budget)."""
    settings = SessionSettings(intra_op_threads=threads, precision=precision)
    tune_garbage_collection()  # the parts that run in this process do so as `pba run` would
    result: dict[str, Any] = {"mode": mode, "precision": precision, "threads": threads,
                              "machine": cpu_description()}
    log("ceiling: ONNX Runtime alone, each (sessions x threads) that uses every core ...")
    configured = result["ceiling_configurations"] = ceilings(mode, settings)
    result["ceiling_from"] = best_of({name: max(rates.values()) for name, rates in configured.items()})
    result["ceiling"] = configured[result["ceiling_from"]]
    best = max(result["ceiling"].values())
    ratios = result["ratios"] = {}
    if "naive" in parts:
        log("naive ...")
        result["naive_per_s"] = naive(mode, settings)
        ratios["naive_over_ceiling"] = result["naive_per_s"] / best
    if "ingest" in parts:
        log("ingest ...")
        result["ingest_events_per_s"] = ingest(mode, settings)
    if "adaptation" in parts:
        log("adaptation ...")
        with_it, without = adaptation_cost(None, mode, settings=settings)
        result["adaptation_us_per_event"] = {"with": with_it, "without": without}
    if "memory" in parts:
        log("memory ...")
        # in a fresh process: memory the other parts freed would otherwise be reused and
        # hide the growth (a small run then measured 0 bytes per link)
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
            result["memory_bytes_per_link"] = child.submit(memory_per_link, mode, memory_links).result()
    if "end_to_end" in parts or "latency" in parts:
        run = f"bench-{int(time.time())}"
        # M members x T threads that use the cores, unless --threads fixes one member's
        shapes = [(1, threads)] if threads else configurations(os.cpu_count() or 1)
        with EmbeddedBroker() as broker:
            measured_e2e = {}
            if "end_to_end" in parts or not latency_rates:
                for members, each in shapes:
                    log(f"end to end, {members} member(s) x {each} thread(s) ...")
                    measured_e2e[f"{members}x{each}"] = asyncio.run(end_to_end(
                        broker.bootstrap, mode, replace(settings, intra_op_threads=each), links, events,
                        f"{run}-{members}x{each}", members))
                result["end_to_end_configurations"] = measured_e2e
                result["end_to_end_from"] = best_of(
                    {name: e2e["model_predictions_per_s"] for name, e2e in measured_e2e.items()})
                result["end_to_end"] = measured_e2e[result["end_to_end_from"]]
                ratios["end_to_end_over_ceiling"] = result["end_to_end"]["model_predictions_per_s"] / best
            if "latency" in parts:
                rates = latency_rates or (result["end_to_end"]["model_predictions_per_s"] / 2,)
                held = result["latency_configurations"] = latency_by_configuration(
                    broker.bootstrap, mode, settings, min(links, 200), shapes, rates,
                    "--latency-rate" if latency_rates else "half of the best end to end", measured_e2e,
                    run, log)
                if "end_to_end" in result:  # issue #21's yardstick: against the best shape's rate
                    within = [sweep["max_rate_within_budget"] or 0.0 for sweep in held.values()]
                    ratios["held_in_budget_over_end_to_end"] = (
                        max(within) / result["end_to_end"]["model_predictions_per_s"])
    return result


def latency_by_configuration(bootstrap: str, mode: str, settings: SessionSettings, links: int,
                             shapes: list[tuple[int, int]], rates: tuple[float, ...], rate_from: str,
                             measured_e2e: dict[str, dict[str, float]], run: str,
                             log: Any) -> dict[str, dict[str, Any]]:
    """Each M x T shape's latency at the same `rates` (one load for every shape: the shapes
    compete for it), beside Kafka alone at each rate (measured once per rate: it has no
    shape)."""
    floors: dict[float, dict[str, float]] = {}
    out = {}
    for members, each in shapes:
        name = f"{members}x{each}"
        measured = []
        for n, per_s in enumerate(rates):
            log(f"latency, {name} (members x threads), at {per_s:,.0f} events/s ...")
            measured.append(asyncio.run(latency(bootstrap, mode, replace(settings, intra_op_threads=each),
                                                links, per_s, 10.0, f"{run}-{name}-{n}-lat", members)))
            if per_s not in floors:  # topics of its own each time: a group that read one has committed
                log(f"Kafka alone at {per_s:,.0f} events/s ...")
                floors[per_s] = asyncio.run(latency_floor(bootstrap, links, per_s, 10.0,
                                                          f"{run}-floor-{len(floors)}"))
        sweep = latency_sweep(mode, [(service, floors[service["rate"]]) for service in measured])
        sweep["rate_from"] = rate_from
        if name in measured_e2e and sweep["max_rate_within_budget"] is not None:
            sweep["held_over_end_to_end"] = (sweep["max_rate_within_budget"]
                                             / measured_e2e[name]["model_predictions_per_s"])
        out[name] = sweep
    return out


def latency_sweep(mode: str, measured: list[tuple[dict[str, float], dict[str, float]]]) -> dict[str, Any]:
    """Latency at several rates against the mode's budget: the highest rate up to which
    every swept rate kept p99 inside it is what one replica can take (docs/SCALING.md)."""
    budget_ms = BUDGET_S[mode_code(mode)] * 1000.0
    points = [{"rate": service["rate"], "service": service, "kafka_alone": floor,
               "p99_within_budget": service["p99_ms"] <= budget_ms}
              for service, floor in sorted(measured, key=lambda pair: pair[0]["rate"])]
    within = None
    for point in points:
        if not point["p99_within_budget"]:
            break
        within = point["rate"]
    return {"points": points, "budget_ms": budget_ms, "max_rate_within_budget": within}
