"""`pba bench`: the service's speed against the only honest yardstick, ONNX Runtime alone.

All parts run in one process, one after another, on the same machine and threads:
  ceiling     ONNX Runtime on the shipped model, across batch sizes (median of repeats)
  naive       the full pipeline with one call per event (batch 1)
  ingest      decode + window update per event, no inference
  memory      bytes per tracked link with many links
  end_to_end  events pre-loaded in the embedded broker, `pba run`'s Service consumes them;
              model-sourced predictions per second from the output records' timestamps
  latency     events produced live at half the end-to-end rate; time from each event's
              Kafka timestamp to its prediction's record timestamp (p50/p95/p99)
Ratios to the ceiling are what to compare between machines; absolute figures only with
the machine named.
"""

from __future__ import annotations

import asyncio
import gc
import os
import statistics
import time
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from consumer.broker import EmbeddedBroker
from consumer.config import ServiceConfig
from consumer.metrics import Metrics
from consumer.processor import Processor
from consumer.service import Service
from consumer.topics import ensure_topics
from predictor.engine import Engine
from predictor.features import build_features
from predictor.modes import WINDOW_STEPS, mode_code
from predictor.pipeline import Pipeline, models_for_mode
from predictor.runtime import SessionSettings, load_models
from training.dataset import sliding_windows
from training.generators import realistic

BATCHES = (1, 8, 32, 64, 128, 256, 512)


def _rate(fn: Any, items: int, seconds: float, repeats: int) -> float:
    """Median items/s of `fn()` over `repeats` timed runs of about `seconds` each."""
    fn()
    rates = []
    for _ in range(repeats):
        started, calls = time.perf_counter(), 0
        while time.perf_counter() - started < seconds:
            fn()
            calls += 1
        rates.append(calls * items / (time.perf_counter() - started))
    return statistics.median(rates)


def ceiling(mode: str, settings: SessionSettings, seconds: float = 1.0, repeats: int = 3) -> dict[int, float]:
    model = load_models(None, (mode,), settings).models[mode]
    steps = WINDOW_STEPS[mode_code(mode)]
    trace = realistic(mode, 2000, np.random.default_rng(0))
    windows, _ = sliding_windows(trace, steps)
    features, _ = build_features(windows[: max(BATCHES)], steps)
    return {b: _rate(lambda b=b: model.run(features[:b]), b, seconds, repeats) for b in BATCHES}


def _events(links: int, per_link: int, mode: str, t0: float = 1.7e9) -> list[tuple[bytes, bytes]]:
    rng = np.random.default_rng(1)
    series = [realistic(mode, per_link, rng).values for _ in range(links)]
    latency = 1.0 if mode == "datacenter" else 80.0
    out = []
    for i in range(per_link):
        for k in range(links):
            link = f"bench-{k:06d}"
            out.append((link.encode(), orjson.dumps({
                "link_id": link, "ts": t0 + i, "bandwidth_mbps": float(series[k][i, 0]),
                "latency_ms": latency})))
    return out


def _records(messages: list[tuple[bytes, bytes]]) -> list[ConsumerRecord]:
    return [ConsumerRecord("in", 0, i, 0, 0, k, v, None, len(k), len(v), [])
            for i, (k, v) in enumerate(messages)]


def _processor(mode: str, settings: SessionSettings, max_links: int = 1_000_000) -> Processor:
    models = load_models(None, models_for_mode(mode), settings)
    return Processor(Pipeline(Engine(models), mode, max_links), ServiceConfig(mode=mode), Metrics())


def naive(mode: str, settings: SessionSettings, links: int = 50, seconds: float = 3.0) -> float:
    """One event at a time through decode, window, one ONNX call, encode."""
    steps = WINDOW_STEPS[mode_code(mode)]
    processor = _processor(mode, settings)
    records = _records(_events(links, steps + 400, mode))
    processor.replay(records[: links * steps])  # windows full: every call runs the model
    rest = iter(records[links * steps:])
    return _rate(lambda: processor.process([next(rest)]), 1, seconds, 1)


def ingest(mode: str, settings: SessionSettings, links: int = 10_000, per_link: int = 20) -> float:
    """Decode and window update only (what a rebuild does), events/s."""
    processor = _processor(mode, settings)
    records = _records(_events(links, per_link, mode))
    started = time.perf_counter()
    processor.replay(records)
    return len(records) / (time.perf_counter() - started)


def memory_per_link(mode: str, links: int = 1_000_000, chunk: int = 50_000) -> float:
    """Resident bytes per tracked link (window arrays, ids and index)."""
    gc.collect()
    before = _rss()
    pipeline = Pipeline(Engine(load_models(None, (), SessionSettings(), allow_fallback=True)), mode, links)
    values = np.full((chunk, 5), 10.0, dtype=np.float32)
    for start in range(0, links, chunk):
        ids = [f"link-{i:09d}" for i in range(start, start + chunk)]
        pipeline.observe(ids, np.full(chunk, 1.0), values)
    gc.collect()
    per_link = (_rss() - before) / links
    del pipeline
    return per_link


def _rss() -> int:
    with open(f"/proc/{os.getpid()}/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def _produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    try:
        futures = [await producer.send(topic, v, key=k) for k, v in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _collect(bootstrap: str, topic: str, count: int, timeout: float) -> list[ConsumerRecord]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    out: list[ConsumerRecord] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < count and time.monotonic() < deadline:
            for recs in (await consumer.getmany(timeout_ms=500, max_records=10_000)).values():
                out.extend(recs)
    finally:
        await consumer.stop()
    return out


async def end_to_end(bootstrap: str, mode: str, settings: SessionSettings, links: int, events: int,
                     run: str) -> dict[str, float]:
    steps = WINDOW_STEPS[mode_code(mode)]
    per_link = max(steps + 20, events // links)
    messages = _events(links, per_link, mode)
    topics = ServiceConfig(input_topic=f"in-{run}", output_topic=f"out-{run}", dlq_topic=f"dlq-{run}")
    await ensure_topics(bootstrap, (topics.input_topic, topics.output_topic, topics.dlq_topic), partitions=4)
    await _produce(bootstrap, topics.input_topic, messages)
    config = ServiceConfig(bootstrap=bootstrap, input_topic=topics.input_topic,
                           output_topic=topics.output_topic, dlq_topic=topics.dlq_topic,
                           group_id=f"g-{run}", mode=mode, metrics_port=0, precision=settings.precision,
                           inference_threads=settings.intra_op_threads)
    service = Service(config)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    records = await _collect(bootstrap, topics.output_topic, len(messages), timeout=600)
    stop.set()
    await task
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
                  seconds: float, run: str) -> dict[str, float]:
    """Events at `rate`/s into a running service with full windows; per-event latency."""
    steps = WINDOW_STEPS[mode_code(mode)]
    per_link = steps + int(rate * seconds / links) + 1
    messages = _events(links, per_link, mode)
    warm = links * steps
    inp, out = f"in-{run}", f"out-{run}"
    await ensure_topics(bootstrap, (inp, out, f"dlq-{run}"), partitions=4)
    await _produce(bootstrap, inp, messages[:warm])
    config = ServiceConfig(bootstrap=bootstrap, input_topic=inp, output_topic=out, dlq_topic=f"dlq-{run}",
                           group_id=f"g-{run}", mode=mode, metrics_port=0, precision=settings.precision,
                           inference_threads=settings.intra_op_threads)
    service = Service(config)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    await _collect(bootstrap, out, warm, timeout=300)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    sent: dict[tuple[bytes, float], int] = {}
    live = messages[warm:]
    started = time.time()
    for n, (key, value) in enumerate(live):
        delay = started + n / rate - time.time()
        if delay > 0.002:
            await asyncio.sleep(delay)
        meta = await (await producer.send(inp, value, key=key))
        sent[(key, orjson.loads(value)["ts"])] = meta.timestamp
    await producer.stop()
    records = await _collect(bootstrap, out, warm + len(live), timeout=120)
    stop.set()
    await task
    lat = []
    for r in records:
        p = orjson.loads(r.value)
        t_in = sent.get((r.key, p["ts"]))
        if t_in is not None:
            lat.append(r.timestamp - t_in)
    ms = np.array(lat, dtype=np.float64)
    return {"rate": rate, "events": len(live), "measured": len(ms),
            "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99))}


def run_bench(mode: str = "internet", links: int = 500, events: int = 40_000,
              precision: str = "float", threads: int = 0, memory_links: int = 1_000_000,
              log: Any = print) -> dict[str, Any]:
    settings = SessionSettings(intra_op_threads=threads, precision=precision)
    result: dict[str, Any] = {"mode": mode, "precision": precision, "machine": _machine()}
    log("ceiling ...")
    result["ceiling"] = ceiling(mode, settings)
    best = max(result["ceiling"].values())
    log("naive ...")
    result["naive_per_s"] = naive(mode, settings)
    log("ingest ...")
    result["ingest_events_per_s"] = ingest(mode, settings)
    log("memory ...")
    result["memory_bytes_per_link"] = memory_per_link(mode, memory_links)
    run = f"bench-{int(time.time())}"
    with EmbeddedBroker() as broker:
        log("end to end ...")
        result["end_to_end"] = asyncio.run(end_to_end(broker.bootstrap, mode, settings, links, events, run))
        e2e = result["end_to_end"]["model_predictions_per_s"]
        log("latency at half the end-to-end rate ...")
        result["latency"] = asyncio.run(latency(broker.bootstrap, mode, settings, min(links, 200),
                                                e2e / 2, 10.0, run + "-lat"))
    result["ratios"] = {
        "end_to_end_over_ceiling": e2e / best,
        "naive_over_ceiling": result["naive_per_s"] / best,
    }
    return result


def _machine() -> str:
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores, {cpu}"


def render(result: dict[str, Any]) -> str:
    best_batch = max(result["ceiling"], key=result["ceiling"].get)
    best = result["ceiling"][best_batch]
    e2e, lat = result["end_to_end"], result["latency"]
    lines = [
        f"pba bench: mode {result['mode']}, {result['precision']} model, {result['machine']}",
        "",
        "| part | figure | ratio to ceiling |",
        "|---|---|---|",
    ]
    for batch, rate in result["ceiling"].items():
        lines.append(f"| ceiling, ONNX Runtime alone, batch {batch} | {rate:,.0f} predictions/s | "
                     f"{rate / best:.2f} |")
    lines += [
        f"| naive, one call per event | {result['naive_per_s']:,.0f} predictions/s | "
        f"{result['naive_per_s'] / best:.2f} |",
        f"| end to end, model-sourced, published and committed | {e2e['model_predictions_per_s']:,.0f}"
        f" predictions/s | {e2e['model_predictions_per_s'] / best:.2f} |",
        f"| latency at {lat['rate']:,.0f} events/s (half of end to end) | p50 {lat['p50_ms']:.1f} ms, "
        f"p95 {lat['p95_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms | |",
        f"| ingest only (decode + window) | {result['ingest_events_per_s']:,.0f} events/s | |",
        f"| memory per tracked link | {result['memory_bytes_per_link']:,.0f} bytes | |",
    ]
    return "\n".join(lines)

