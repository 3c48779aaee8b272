#!/usr/bin/env python3
"""Prints the table of a bench/run results file (JSON lines from ecos-bench):
per scenario and server, the median of each figure over the runs and the
min-max spread. Usage: bench/summarize.py RESULTS.jsonl"""
import json
import statistics
import sys


def cell(values, fmt):
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    med = statistics.median(values)
    if len(values) == 1:
        return fmt.format(med)
    return (fmt + " ({}–{})").format(med, fmt.format(min(values)), fmt.format(max(values)))


COLUMNS = [
    # header, extractor, format
    ("runs", None, None),
    ("connected", lambda r: r["connected"], "{:.0f}"),
    ("connect s", lambda r: r["connect_secs"], "{:.2f}"),
    ("connect server CPU %", lambda r: None if r.get("connect_server_cpu_util") is None else 100 * r["connect_server_cpu_util"], "{:.0f}"),
    ("connect server CPU µs/conn", lambda r: r.get("connect_server_cpu_us_per_conn"), "{:.0f}"),
    ("connect bench CPU %", lambda r: None if r.get("connect_bench_cpu_util") is None else 100 * r["connect_bench_cpu_util"], "{:.0f}"),
    ("RSS/conn KiB", lambda r: r.get("rss_per_conn_kib"), "{:.1f}"),
    ("sent", lambda r: r["sent"] if r["count"] else None, "{:.0f}"),
    ("deliveries/s", lambda r: r["deliveries_per_sec"] if r["count"] and not r.get("ack_event") else None, "{:.0f}"),
    ("ratio", lambda r: r["ratio"] if r["count"] and not r.get("ack_event") else None, "{:.4f}"),
    ("p50 ms", lambda r: r["latency_ms"]["p50"] if r["count"] else None, "{:.2f}"),
    ("p90 ms", lambda r: r["latency_ms"]["p90"] if r["count"] else None, "{:.2f}"),
    ("p99 ms", lambda r: r["latency_ms"]["p99"] if r["count"] else None, "{:.2f}"),
    ("max ms", lambda r: r["latency_ms"]["max"] if r["count"] else None, "{:.2f}"),
    ("server CPU %", lambda r: None if r.get("server_cpu_util") is None or not r["count"] else 100 * r["server_cpu_util"], "{:.0f}"),
    ("CPU µs/delivery", lambda r: r.get("server_cpu_us_per_delivery"), "{:.2f}"),
    ("bench CPU %", lambda r: None if r.get("bench_cpu_util") is None or not r["count"] else 100 * r["bench_cpu_util"], "{:.0f}"),
    ("API req/s", lambda r: r.get("api_requests_per_sec"), "{:.0f}"),
    ("API p99 ms", lambda r: (r.get("api_request_ms") or {}).get("p99"), "{:.2f}"),
    ("acks/s", lambda r: r.get("acks_per_sec"), "{:.0f}"),
]


def main(path):
    rows = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                r = json.loads(line)
                rows.setdefault((r["scenario"], r["server"]), []).append(r)
    print("| scenario | server | " + " | ".join(c[0] for c in COLUMNS) + " |")
    print("|---|---|" + "---|" * len(COLUMNS))
    for (scenario, server), runs in rows.items():
        cells = []
        for header, get, fmt in COLUMNS:
            cells.append(str(len(runs)) if get is None else cell([get(r) for r in runs], fmt))
        print(f"| {scenario} | {server} | " + " | ".join(cells) + " |")
    print("\nmedian (min–max) over the runs; server CPU % is of one core during the send phase and drain;"
          " bench CPU % is of the load generator's cores in the same span; API req/s and API p99 ms"
          " (api-rps) are emit requests answered 200 per second over keep-alive connections, and their round trip;"
          " in the webhooks:* rows with acks/s, the latency columns are ack round trips (send to ack).")


if __name__ == "__main__":
    main(sys.argv[1])
