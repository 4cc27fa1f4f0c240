"""The bench's result as a Markdown table: each figure beside its ratio to the ceiling,
the form docs/BENCHMARKS.md keeps."""

from __future__ import annotations

from typing import Any


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
    for name, rates in result.get("ceiling_configurations", {}).items():
        top = max(rates, key=lambda b: rates[b])
        lines.append(f"| ONNX Runtime alone, {name} (sessions x threads), best batch {top} | "
                     f"{rates[top]:,.0f} predictions/s | {rates[top] / best:.2f} |")
    source = result.get("ceiling_from", "one session")
    for batch, rate in result["ceiling"].items():
        lines.append(f"| ceiling ({source}), batch {batch} | {rate:,.0f} predictions/s | "
                     f"{rate / best:.2f} |")
    if "naive_per_s" in result:
        lines.append(f"| naive, one call per event | {result['naive_per_s']:,.0f} predictions/s | "
                     f"{result['naive_per_s'] / best:.2f} |")
    for name, e2e in result.get("end_to_end_configurations", {}).items():
        rate = e2e["model_predictions_per_s"]
        lines.append(f"| end to end, {name} (members x inference threads), model-sourced, published and "
                     f"committed | {rate:,.0f} predictions/s | {rate / best:.2f} |")
    if "ingest_events_per_s" in result:
        lines.append(f"| ingest only (decode + window) | {result['ingest_events_per_s']:,.0f} events/s | |")
    if "adaptation_us_per_event" in result:
        cost = result["adaptation_us_per_event"]
        lines.append(f"| per-link adaptation: forecast of 256 links, with / without | {cost['with']:.1f} / "
                     f"{cost['without']:.1f} us per event (+{cost['with'] - cost['without']:.1f}) | |")
    if "memory_bytes_per_link" in result:
        lines.append(f"| memory per tracked link | {result['memory_bytes_per_link']:,.0f} bytes | |")
    if "latency_configurations" in result:
        lines += _latency(result["latency_configurations"])
        held = result["ratios"].get("held_in_budget_over_end_to_end")
        if held is not None:
            lines.append("- the most any shape held inside the budget, over the best end-to-end rate: "
                         f"{held:.2f}")
    return "\n".join(lines)


def _latency(configurations: dict[str, dict[str, Any]]) -> list[str]:
    budget = next(iter(configurations.values()))["budget_ms"]
    lines = ["", f"Latency by members x inference threads and rate (budget {budget:.0f} ms; Kafka alone: "
             "the same stream echoed by a consumer and producer with `pba run`'s settings, no service):", "",
             "| shape | events/s | p50 | p95 | p99 | p99 inside the budget | Kafka alone p50 / p99 |",
             "|---|---|---|---|---|---|---|"]
    for name, sweep in configurations.items():
        for point in sweep["points"]:
            s, k = point["service"], point["kafka_alone"]
            lines.append(f"| {name} | {point['rate']:,.0f} | {s['p50_ms']:.0f} ms | {s['p95_ms']:.0f} ms | "
                         f"{s['p99_ms']:.0f} ms | {'yes' if point['p99_within_budget'] else 'no'} | "
                         f"{k['p50_ms']:.0f} / {k['p99_ms']:.0f} ms |")
    lines.append("")
    for name, sweep in configurations.items():
        within = sweep["max_rate_within_budget"]
        held = sweep.get("held_over_end_to_end")
        of_e2e = f" ({held:.2f} of its end-to-end rate)" if held is not None else ""
        lines.append(f"- {name} ({sweep['rate_from']}): p99 inside the budget up to {within:,.0f} events/s"
                     f"{of_e2e}" if within else f"- {name} ({sweep['rate_from']}): p99 over the budget "
                     "at every rate measured")
    return lines
