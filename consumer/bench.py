"""`pba bench`: the service's speed against the only honest yardstick, ONNX Runtime alone.

All parts run in one process, one after another, on the same machine and threads:
  ceiling     ONNX Runtime on the shipped model, across batch sizes (median of repeats)
  naive       the full pipeline with one call per event (batch 1)
  ingest      decode + window update per event, no inference
  memory      bytes per tracked link with many links
  end_to_end  events pre-loaded in the embedded broker, `pba run`'s Service consumes them;
              model-sourced predictions per second from the output records' timestamps
  latency     events produced live at half the end-to-end rate (or at given rates: a
              sweep finds the highest one whose p99 stays inside the mode's budget); time
              from each event's Kafka timestamp to its prediction's record timestamp
              (p50/p95/p99); and its floor: the same stream echoed through the broker
              without the service
Ratios to the ceiling are what to compare between machines; absolute figures only with
the machine named.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from consumer.broker import EmbeddedBroker
from consumer.clients import FETCH_MAX_WAIT_MS, PRODUCER_LINGER_MS
from consumer.config import ServiceConfig
from consumer.metrics import Metrics
from consumer.processor import Processor
from consumer.run import tune_garbage_collection
from consumer.service import POLL_TIMEOUT_MS
from consumer.topics import ensure_topics
from predictor.engine import Engine
from predictor.features import build_features
from predictor.modes import BUDGET_S, WINDOW_STEPS, mode_code
from predictor.pipeline import Pipeline, models_for_mode
from predictor.runtime import SessionSettings, load_models
from training.dataset import sliding_windows
from training.generators import realistic

BATCHES = (1, 8, 32, 64, 128, 256, 512)
LIVE_LINGER_MS = 2


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
    return {b: _rate(lambda b=b: model.run_call(features[:b]), b, seconds, repeats) for b in BATCHES}


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


def ingest(mode: str, settings: SessionSettings, links: int = 10_000, per_link: int = 20,
           repeats: int = 3) -> float:
    """Decode and window update only (what a rebuild does), events/s: the median of
    `repeats` passes, each into fresh windows (one pass moved by 1.6x between runs on
    the noisy development machine)."""
    records = _records(_events(links, per_link, mode))
    rates = []
    for _ in range(repeats):
        processor = _processor(mode, settings)
        started = time.perf_counter()
        processor.replay(records)
        rates.append(len(records) / (time.perf_counter() - started))
    return statistics.median(rates)


def memory_per_link(mode: str, links: int = 1_000_000, chunk: int = 50_000) -> float:
    """Resident bytes per tracked link (window arrays, ids and index)."""
    gc.collect()
    before = _rss()
    pipeline = Pipeline(Engine(load_models(None, (), SessionSettings(), allow_fallback=True)), mode, links)
    chunk = min(chunk, links)  # a chunk over the cap would only measure evictions
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


async def _collect(bootstrap: str, topic: str, count: int, timeout: float,
                   service: subprocess.Popen[bytes] | None = None) -> list[ConsumerRecord]:
    """Read `topic` from the start until it holds `count` records (failing if the service
    exits first). Counting the records themselves: Tansu's end offsets are not counts."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                fetch_max_wait_ms=200)
    await consumer.start()
    out: list[ConsumerRecord] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < count:
            if service is not None and service.poll() is not None:
                raise RuntimeError(f"pba run exited with {service.returncode} during the bench")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic} holds {len(out)} of {count} records after {timeout:.0f} s")
            for recs in (await consumer.getmany(timeout_ms=500, max_records=10_000)).values():
                out.extend(recs)
    finally:
        await consumer.stop()
    return out


@contextlib.contextmanager
def _service(bootstrap: str, run: str, mode: str,
             settings: SessionSettings) -> Iterator[subprocess.Popen[bytes]]:
    """`pba run` in its own process, as in production; stopped with SIGTERM (clean shutdown)."""
    command = [sys.executable, "-m", "consumer.cli", "run", "--bootstrap", bootstrap,
               "--input-topic", f"in-{run}", "--output-topic", f"out-{run}", "--dlq-topic", f"dlq-{run}",
               "--group-id", f"g-{run}", "--mode", mode, "--metrics-port", "0",
               "--precision", settings.precision, "--inference-threads", str(settings.intra_op_threads),
               "--log-level", "WARNING"]
    process = subprocess.Popen(command)
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _topics(bootstrap: str, run: str) -> tuple[str, str]:
    await ensure_topics(bootstrap, (f"in-{run}", f"out-{run}", f"dlq-{run}"), partitions=4)
    return f"in-{run}", f"out-{run}"


async def end_to_end(bootstrap: str, mode: str, settings: SessionSettings, links: int, events: int,
                     run: str) -> dict[str, float]:
    steps = WINDOW_STEPS[mode_code(mode)]
    per_link = max(steps + 20, events // links)
    messages = _events(links, per_link, mode)
    inp, out = await _topics(bootstrap, run)
    await _produce(bootstrap, inp, messages)
    with _service(bootstrap, run, mode, settings) as service:
        records = await _collect(bootstrap, out, len(messages), 900, service)
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
    """Events at `rate`/s into a running service with full windows; per event, the time
    from its record's timestamp to its prediction's record timestamp."""
    steps = WINDOW_STEPS[mode_code(mode)]
    per_link = steps + int(rate * seconds / links) + 1
    messages = _events(links, per_link, mode)
    warm = links * steps
    inp, out = await _topics(bootstrap, run)
    await _produce(bootstrap, inp, messages[:warm])
    with _service(bootstrap, run, mode, settings) as service:
        await _collect(bootstrap, out, warm, 300, service)
        sent = await _produce_at(bootstrap, inp, messages[warm:], rate)
        records = await _collect(bootstrap, out, len(messages), 120, service)
    return _latencies(rate, sent, records)


async def latency_floor(bootstrap: str, links: int, rate: float, seconds: float,
                        run: str) -> dict[str, float]:
    """The same live stream echoed through the broker without the service: a consumer
    and a producer with `pba run`'s settings re-publish each record as it arrives. What
    Kafka alone costs at this rate on this machine; the latency above it is the service's."""
    messages = _events(links, int(rate * seconds / links) + 1, "datacenter")
    inp, out = await _topics(bootstrap, run)
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
        sent = await _produce_at(bootstrap, inp, messages, rate)
        await asyncio.wait_for(echoing, 120)
    finally:
        await consumer.stop()
        await echo.stop()
    return _latencies(rate, sent, await _collect(bootstrap, out, len(messages), 120))


async def _produce_at(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]],
                      rate: float) -> dict[tuple[bytes, float], int]:
    """Send at `rate`/s; each message's record timestamp by (key, event ts)."""
    # agents batch for a few ms like any Kafka producer (Java's default linger is 5 ms);
    # the record timestamp is taken before that wait, so it counts in the latency
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=LIVE_LINGER_MS)
    await producer.start()
    try:
        futures = []
        started = time.perf_counter()
        for n, (key, value) in enumerate(messages):
            delay = started + n / rate - time.perf_counter()
            if delay > 0.001:
                await asyncio.sleep(delay)
            futures.append(await producer.send(topic, value, key=key))
        return {(key, orjson.loads(value)["ts"]): (await f).timestamp
                for (key, value), f in zip(messages, futures, strict=True)}
    finally:
        await producer.stop()


def _latencies(rate: float, sent: dict[tuple[bytes, float], int],
               records: list[ConsumerRecord]) -> dict[str, float]:
    """Per live event, its output record's timestamp minus its input record's."""
    lat = []
    for r in records:
        t_in = sent.get((r.key, orjson.loads(r.value)["ts"]))
        if t_in is not None:
            lat.append(r.timestamp - t_in)
    ms = np.array(lat, dtype=np.float64)
    return {"rate": rate, "events": len(sent), "measured": len(ms),
            "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99))}


PARTS = ("naive", "ingest", "memory", "end_to_end", "latency")


def run_bench(mode: str = "internet", links: int = 500, events: int = 40_000,
              precision: str = "float", threads: int = 0, memory_links: int = 1_000_000,
              parts: tuple[str, ...] = PARTS, log: Any = print,
              latency_rates: tuple[float, ...] = ()) -> dict[str, Any]:
    """Run the chosen parts. Latency runs at half of end_to_end's rate, so it brings that
    part along, unless latency_rates fixes the rate (to compare settings at one load) or
    sweeps several (to find the load up to which p99 stays inside the mode's budget)."""
    settings = SessionSettings(intra_op_threads=threads, precision=precision)
    tune_garbage_collection()  # the parts that run in this process do so as `pba run` would
    result: dict[str, Any] = {"mode": mode, "precision": precision, "threads": threads,
                              "machine": _machine()}
    log("ceiling ...")
    result["ceiling"] = ceiling(mode, settings)
    best = max(result["ceiling"].values())
    ratios = result["ratios"] = {}
    if "naive" in parts:
        log("naive ...")
        result["naive_per_s"] = naive(mode, settings)
        ratios["naive_over_ceiling"] = result["naive_per_s"] / best
    if "ingest" in parts:
        log("ingest ...")
        result["ingest_events_per_s"] = ingest(mode, settings)
    if "memory" in parts:
        log("memory ...")
        # in a fresh process: memory the other parts freed would otherwise be reused and
        # hide the growth (a small run then measured 0 bytes per link)
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
            result["memory_bytes_per_link"] = child.submit(memory_per_link, mode, memory_links).result()
    if "end_to_end" in parts or "latency" in parts:
        run = f"bench-{int(time.time())}"
        with EmbeddedBroker() as broker:
            rates = latency_rates
            if "end_to_end" in parts or not rates:
                log("end to end ...")
                result["end_to_end"] = asyncio.run(
                    end_to_end(broker.bootstrap, mode, settings, links, events, run))
                e2e = result["end_to_end"]["model_predictions_per_s"]
                ratios["end_to_end_over_ceiling"] = e2e / best
                rates = rates or (e2e / 2,)
            if "latency" in parts:
                measured = [_latency_and_floor(broker.bootstrap, mode, settings, min(links, 200), rate,
                                               f"{run}-{n}", log) for n, rate in enumerate(rates)]
                if len(measured) == 1:
                    result["latency"], result["latency_floor"] = measured[0]
                    origin = "--latency-rate" if latency_rates else "half of end to end"
                    result["latency"]["rate_from"] = origin
                else:
                    result.update(latency_sweep(mode, measured))
    return result


def _latency_and_floor(bootstrap: str, mode: str, settings: SessionSettings, links: int, rate: float,
                       run: str, log: Any) -> tuple[dict[str, float], dict[str, float]]:
    log(f"latency at {rate:,.0f} events/s ...")
    service = asyncio.run(latency(bootstrap, mode, settings, links, rate, 10.0, run + "-lat"))
    log("Kafka alone at the same rate ...")
    return service, asyncio.run(latency_floor(bootstrap, links, rate, 10.0, run + "-floor"))


def latency_sweep(mode: str, measured: list[tuple[dict[str, float], dict[str, float]]]) -> dict[str, Any]:
    """Latency at several rates against the mode's budget: the highest rate up to which
    every swept rate kept p99 inside it is what one replica can take (docs/SCALING.md)."""
    budget_ms = BUDGET_S[mode_code(mode)] * 1000.0
    sweep = [{"rate": service["rate"], "service": service, "kafka_alone": floor,
              "p99_within_budget": service["p99_ms"] <= budget_ms}
             for service, floor in sorted(measured, key=lambda pair: pair[0]["rate"])]
    within = None
    for point in sweep:
        if not point["p99_within_budget"]:
            break
        within = point["rate"]
    return {"latency_sweep": sweep, "budget_ms": budget_ms, "max_rate_within_budget": within}


def _machine() -> str:
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores, {cpu}"


def render(result: dict[str, Any]) -> str:
    best = max(result["ceiling"].values())
    threads = result.get("threads") or "all cores"
    lines = [
        f"pba bench: mode {result['mode']}, {result['precision']} model, ONNX Runtime threads "
        f"{threads}, {result['machine']}",
        "",
        "| part | figure | ratio to ceiling |",
        "|---|---|---|",
    ]
    for batch, rate in result["ceiling"].items():
        lines.append(f"| ceiling, ONNX Runtime alone, batch {batch} | {rate:,.0f} predictions/s | "
                     f"{rate / best:.2f} |")
    if "naive_per_s" in result:
        lines.append(f"| naive, one call per event | {result['naive_per_s']:,.0f} predictions/s | "
                     f"{result['naive_per_s'] / best:.2f} |")
    if "end_to_end" in result:
        rate = result["end_to_end"]["model_predictions_per_s"]
        lines.append(f"| end to end, model-sourced, published and committed | {rate:,.0f} predictions/s"
                     f" | {rate / best:.2f} |")
    if "latency" in result:
        lat = result["latency"]
        lines.append(f"| latency at {lat['rate']:,.0f} events/s ({lat['rate_from']}) | p50 "
                     f"{lat['p50_ms']:.1f} ms, p95 {lat['p95_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms | |")
    if "latency_floor" in result:
        lat = result["latency_floor"]
        lines.append(f"| latency floor: the same stream echoed by a consumer and producer with "
                     f"`pba run`'s settings, no service | p50 {lat['p50_ms']:.1f} ms, p95 "
                     f"{lat['p95_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms | |")
    if "ingest_events_per_s" in result:
        lines.append(f"| ingest only (decode + window) | {result['ingest_events_per_s']:,.0f} events/s | |")
    if "memory_bytes_per_link" in result:
        lines.append(f"| memory per tracked link | {result['memory_bytes_per_link']:,.0f} bytes | |")
    if "latency_sweep" in result:
        lines += ["", f"Latency by rate (budget {result['budget_ms']:.0f} ms; Kafka alone: the same stream "
                  "echoed without the service):", "",
                  "| events/s | p50 | p95 | p99 | p99 inside the budget | Kafka alone p50 / p99 |",
                  "|---|---|---|---|---|---|"]
        for point in result["latency_sweep"]:
            s, k = point["service"], point["kafka_alone"]
            lines.append(f"| {point['rate']:,.0f} | {s['p50_ms']:.0f} ms | {s['p95_ms']:.0f} ms | "
                         f"{s['p99_ms']:.0f} ms | {'yes' if point['p99_within_budget'] else 'no'} | "
                         f"{k['p50_ms']:.0f} / {k['p99_ms']:.0f} ms |")
        within = result["max_rate_within_budget"]
        lines += ["", f"p99 inside the budget up to {within:,.0f} events/s of those swept" if within
                  else "p99 over the budget at every rate swept"]
    return "\n".join(lines)
