#!/usr/bin/env python3
"""keel bench orchestrator: the suite behind `make bench`.

    python3 bench/run.py --build build/release [--quick] [--out bench/results]

QUICK=1 in the environment (or --quick) runs the short mode: fewer rounds,
counts and sizes, but every section. Python standard library only.

Sections
  1. small-packet ping-pong latency: keel-pingpong (one connection, one message
     in flight) against each echo server, sizes 1..4096 B, p50..max.
  2. Nagle / delayed-ACK matrix (bench/sections/nagle.py): latency and
     segments per exchange for the 20 B write-read / write-write-read
     matrix, many tiny writes (with TCP_CORK and MSG_MORE), and keel's write
     coalescing.
  3. throughput: keel-tput, 16 KiB blocks ping-ponged over 1..1000
     connections, MiB/s.
  2, 4, 5, 7..13: modules in bench/sections/ (see its README.md); 9 is
     wrk against keel-http, keep-alive and close per request, with the
     TIME_WAIT left on each side; 10 is silly-window avoidance (keel-sws);
     11 is TLS (bench/sections/tls.py): HTTPS and handshakes/s against
     nginx, RESP over TLS against redis-server, idle TLS memory; 12 is the
     servers' CPU per message at 1,000 connections (bench/sections/cpu.py);
     13 is server memory per idle connection against the peers (idlemem.py).
  6. micro-benchmarks: timer_bench and micro_bench (Google Benchmark).

Every server is its own process, started on port 0; its "listening on
HOST:PORT" line gives the port. Comparisons are side by side in one run:
each round runs every server once (the order rotates from round to round),
and the figures reported are medians over rounds. Every figure is also given
as a ratio to floor-echo (the bare epoll loop) measured in the same run.
floor-uring-echo, the bare io_uring loop, is a second floor row in 1 and 3
(its "x floor" is its ratio to floor-echo), and keel-echo --backend io_uring
is the row keel-echo-uring when keel-echo has that flag (else "skipped").

A binary that is not built becomes a "not built" row; a server that fails
becomes a "failed" row. Neither fails the run.

Output: progress and tables on the terminal; bench/results/<UTC>.json with
every figure and the machine; gnuplot PNGs; copies as latest.json,
latency-latest.png, nagle-latest.png (and throughput-latest.png).
"""

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import *  # noqa: F401,F403  (say, table, Server, ServerSet, run_json, ...)
from benchlib import T0, LISTEN_RE  # noqa: F401

SCHEMA = "keel-bench/1"
FLOOR = "floor-echo"
PERCENTILES = ["p50_us", "p90_us", "p99_us", "p999_us", "max_us"]
PCT_LABELS = {"p50_us": "p50", "p90_us": "p90", "p99_us": "p99", "p999_us": "p99.9", "max_us": "max"}

# Mode settings. FULL must finish within 5 minutes, QUICK within 60 seconds
# on the shared 2-core VM (the remaining time is the build check of make).
FULL = {
    "lat_sizes": [1, 16, 64, 256, 1024, 4096],
    "lat_rounds": 3,
    "lat_count": 8000,
    "lat_warmup": 500,
    "tput_conns": [1, 10, 100, 1000],
    "tput_block": 16384,
    "tput_rounds": 3,
    "tput_seconds": 1.0,
    "tput_warmup": 0.3,
    "micro_min_time": 0.1,
    # The 1M-timer cases take about 2 minutes (mostly set-up) on the shared
    # VM, more than the 5-minute budget allows: run timer_bench by hand for them.
    "timer_filter": "/1000$|/100000$",
}
QUICK = dict(
    FULL,
    lat_sizes=[1, 64, 1024],
    lat_rounds=1,
    lat_count=2000,
    lat_warmup=200,
    tput_conns=[1, 100],
    tput_rounds=1,
    tput_seconds=0.5,
    tput_warmup=0.2,
    micro_min_time=0.01,
    timer_filter="/1000$",
)


# ---- section 1: latency ----------------------------------------------------------

METRICS = "keel-echo+metrics"


def coro_servers(bindir, keel_name):
    """The coroutine rows of sections 1 and 3 (issue 15): keel-echo --coroutine on one loop, and
    Asio's own C++20-coroutine echo on one thread."""
    return [
        Server(keel_name, bindir / "keel-echo", ["--threads", "0", "--coroutine"], "keel-echo --coroutine (1 loop)"),
        Server("asio-coro-echo", bindir / "asio-coro-echo", [], "asio-coro-echo (C++20 coroutines)"),
    ]


def pair_ratios(rows, coro, pairs, field, group):
    """Per group (size or connections): coro's figure / each named peer's, from the same run's medians."""
    out = {}
    for g in sorted({r[group] for r in rows}):
        by = {r["server"]: r for r in rows if r[group] == g and r.get("status") == "ok"}
        if coro in by:
            out[str(g)] = {f"{field}/{peer}": ratio(by[coro][field], by[peer][field]) for peer in pairs if peer in by}
    return out


def uring_summary(rows, servers, fields, group, unit, keel_peer):
    """The io_uring rows (issue 16) against their peers, per group (size or connections), printed and returned:
    the two floors (floor-uring-echo / floor-echo), keel on io_uring against the io_uring floor and against
    keel-echo on epoll. A row that did not run gets its status instead."""
    status = {s.name: s.status for s in servers}
    out = {}
    for name, peer in ((FLOOR_URING, FLOOR), (KEEL_URING, FLOOR_URING), (KEEL_URING, keel_peer)):
        by = {f: pair_ratios(rows, name, [peer], f, group) for f in fields}
        key = f"{name}/{peer}"
        out[key] = {g: {f.removesuffix("_us"): d.get(f"{f}/{peer}") for f in fields for d in [by[f][g]]}
                    for g in by[fields[0]]}
        st = status.get(name, "not run")
        text = "; ".join(f"{g} {unit} " + " ".join(f"{k} {fmt_ratio(v)}" for k, v in d.items())
                         for g, d in out[key].items()) or (st if st != "ok" else "no figures")
        say(f"  {key}: {text}")
    return out


def section_latency(cfg, bindir):
    say("\n== 1. small-packet ping-pong latency (one connection, one message in flight)")
    client = bindir / "keel-pingpong"
    servers = [
        Server(FLOOR, bindir / "floor-echo", []),
        uring_floor(bindir),
        Server("keel-echo", bindir / "keel-echo", ["--threads", "0"], "keel-echo (1 loop)"),
        keel_uring(bindir),
        # The cost of metrics (issue 17): the same server with its registry,
        # loop measurement and /metrics endpoint on (nothing scrapes it).
        Server(METRICS, bindir / "keel-echo", ["--threads", "0", "--metrics-port", "0"],
               "keel-echo (1 loop, --metrics-port)"),
        Server("libevent-echo", bindir / "libevent-echo", []),
        Server("libuv-echo", bindir / "libuv-echo", []),
        Server("asio-echo", bindir / "asio-echo", []),
    ] + coro_servers(bindir, "keel-echo-coro")
    # A change to the library is judged against the binary it replaces, in
    # the same run: KEEL_BENCH_BASELINE_ECHO names an older keel-echo build.
    baseline = os.environ.get("KEEL_BENCH_BASELINE_ECHO")
    if baseline:
        servers.insert(3, Server("keel-echo-baseline", Path(baseline), ["--threads", "0"],
                                 "keel-echo (baseline build)"))
    sizes = cfg["lat_sizes"]
    rounds = cfg["lat_rounds"]
    # keel on both ends: keel-pingpong-keel (same CLI and JSON as
    # keel-pingpong, on keel's loop and Client) against the keel-echo server.
    kclient = bindir / "keel-pingpong-keel"
    KCLIENT = "keel-client/keel-echo"
    raw = {(n, z): [] for n in [s.name for s in servers] + [KCLIENT] for z in sizes}
    errors = {(n, z): [] for n in [s.name for s in servers] + [KCLIENT] for z in sizes}
    say(
        f"  {rounds} round(s) x {len(sizes)} sizes x {len(servers)} servers (+ keel's own client against keel-echo); "
        f"{cfg['lat_count']} round trips (+{cfg['lat_warmup']} warm-up) per run"
    )
    if not client.is_file():
        say(f"  keel-pingpong not built ({client}); section skipped")
        return {"status": "client not built", "rows": [], "servers": {s.name: s.describe() for s in servers}}

    with ServerSet(servers) as ss:
        live = ss.running()
        # (key, server, client binary): every server with keel-pingpong, plus keel-echo with keel's client.
        pairs = [(s.name, s, client) for s in live]
        kecho = next((s for s in live if s.name == "keel-echo"), None)
        if kecho is not None and kclient.is_file():
            pairs.append((KCLIENT, kecho, kclient))
        total = rounds * len(sizes) * len(pairs)
        done = 0
        for r in range(rounds):
            for size in sizes:
                parts = []
                for key, s, cbin in rotated(pairs, r):
                    if not s.alive():
                        s.mark_dead()
                        parts.append(f"{key} dead")
                        done += 1
                        continue
                    cmd = [str(cbin), "--port", str(s.port), "--size", str(size), "--count", str(cfg["lat_count"]),
                           "--warmup", str(cfg["lat_warmup"]), "--nodelay", "1", "--mode", "echo", "--json"]
                    res, err = run_json(cmd, timeout=120)
                    done += 1
                    if res:
                        raw[(key, size)].append(res)
                        parts.append(f"{key} {fmt_us(res['p50_us'])}")
                    else:
                        errors[(key, size)].append(err)
                        parts.append(f"{key} ERROR")
                        if not s.alive():
                            s.mark_dead()
                progress(done, total, f"round {r + 1}/{rounds} {size:>4} B  p50 us: " + " | ".join(parts))
        server_desc = {s.name: s.describe() for s in servers}

    kecho_srv = next(s for s in servers if s.name == "keel-echo")
    entries = [(s.name, s.label, s, None) for s in servers]
    entries.append((KCLIENT, "keel client -> keel-echo", kecho_srv,
                    None if kclient.is_file() else "client not built (keel-pingpong-keel)"))
    rows = []
    for size in sizes:
        floor_rounds = raw[(FLOOR, size)]
        floor_p50, floor_p99 = median_of(floor_rounds, "p50_us"), median_of(floor_rounds, "p99_us")
        for key, label, s, missing in entries:
            rr = raw[(key, size)]
            row = {"server": key, "label": label, "size": size, "rounds": rr}
            if key == KCLIENT:
                row["client"] = "keel-pingpong-keel"
            if rr:
                row["status"] = "ok"
                for k in PERCENTILES + ["mean_us"]:
                    row[k] = median_of(rr, k)
                row["ratio_to_floor"] = {"p50": ratio(row["p50_us"], floor_p50), "p99": ratio(row["p99_us"], floor_p99)}
            else:
                row["status"] = missing or (s.status if s.status != "ok" else "failed")
            if errors[(key, size)]:
                row["errors"] = errors[(key, size)]
            rows.append(row)

    say(f"\n  latency in us (medians over {rounds} round(s)); x floor = server / floor-echo, lower is better;"
        " every row uses keel-pingpong (blocking client) except 'keel client', which is keel on both ends")
    trows = []
    for size in sizes:
        for row in (x for x in rows if x["size"] == size):
            if row["status"] == "ok":
                trows.append([size, row["label"]] + [fmt_us(row[k]) for k in PERCENTILES]
                             + [fmt_ratio(row["ratio_to_floor"]["p50"]), fmt_ratio(row["ratio_to_floor"]["p99"])])
            else:
                trows.append([size, row["label"], row["status"]])
    say(table(["size", "server", "p50", "p90", "p99", "p99.9", "max", "p50 x floor", "p99 x floor"], trows,
              "rlrrrrrrr"))
    # Metrics on vs off, same rounds: > 1 means metrics cost latency.
    mrows = []
    for size in sizes:
        on = next((x for x in rows if x["size"] == size and x["server"] == METRICS and x["status"] == "ok"), None)
        off = next((x for x in rows if x["size"] == size and x["server"] == "keel-echo" and x["status"] == "ok"), None)
        if on and off:
            on["ratio_to_keel_echo"] = {"p50": ratio(on["p50_us"], off["p50_us"]), "p99": ratio(on["p99_us"], off["p99_us"])}
            mrows.append([size, fmt_us(off["p50_us"]), fmt_us(on["p50_us"]), fmt_ratio(on["ratio_to_keel_echo"]["p50"]),
                          fmt_us(off["p99_us"]), fmt_us(on["p99_us"]), fmt_ratio(on["ratio_to_keel_echo"]["p99"])])
    if mrows:
        say("\n  metrics cost: keel-echo with --metrics-port vs without (ratio = with / without)")
        say(table(["size", "p50 off", "p50 on", "p50 ratio", "p99 off", "p99 on", "p99 ratio"], mrows, "rrrrrrr"))
    coro = {k: pair_ratios(rows, "keel-echo-coro", ["keel-echo", "asio-coro-echo"], k, "size")
            for k in ("p50_us", "p99_us")}
    say("  coroutine cost (keel-echo --coroutine / peer; goal p50 <= 1.03 x keel-echo, <= 1.00 x asio-coro-echo): "
        + "; ".join(f"{z} B " + ", ".join(f"{k} {fmt_ratio(v)}" for k, v in d.items())
                    for z, d in coro["p50_us"].items()))
    uring = uring_summary(rows, servers, ("p50_us", "p99_us"), "size", "B", "keel-echo")
    return {
        "status": "ok",
        "coroutine_ratios": coro,
        "uring_ratios": uring,
        "client": "keel-pingpong --nodelay 1 --mode echo",
        "sizes": sizes,
        "rounds": rounds,
        "count": cfg["lat_count"],
        "warmup": cfg["lat_warmup"],
        "floor": FLOOR,
        "servers": server_desc,
        "keel_client": "keel-pingpong-keel --nodelay 1 --mode echo (row server keel-client/keel-echo)",
        "rows": rows,
    }


# ---- section 3: throughput -------------------------------------------------------


def section_throughput(cfg, bindir):
    block = cfg["tput_block"]
    say(f"\n== 3. throughput ({block // 1024} KiB blocks ping-ponged, one block in flight per connection)")
    client = bindir / "keel-tput"
    servers = [
        Server(FLOOR, bindir / "floor-echo", []),
        uring_floor(bindir),
        Server("keel-echo/1loop", bindir / "keel-echo", ["--threads", "0"], "keel-echo (1 loop)"),
        Server("keel-echo/2loops", bindir / "keel-echo", ["--threads", "2"], "keel-echo (2 loops)"),
        keel_uring(bindir),
        Server("libevent-echo", bindir / "libevent-echo", []),
        Server("libuv-echo", bindir / "libuv-echo", []),
        Server("asio-echo", bindir / "asio-echo", []),
    ] + coro_servers(bindir, "keel-echo-coro/1loop")
    conns = cfg["tput_conns"]
    rounds = cfg["tput_rounds"]
    if not client.is_file():
        say(f"  keel-tput not built ({client}); section skipped (every row: client not built)")
        return {
            "status": "client not built",
            "rows": [{"server": s.name, "connections": c, "status": "client not built"} for s in servers for c in conns],
            "servers": {s.name: {"binary": rel(s.binary), "status": "not started"} for s in servers},
        }
    say(f"  {rounds} round(s) x {len(conns)} connection counts x {len(servers)} servers; "
        f"{cfg['tput_seconds']}s timed (+{cfg['tput_warmup']}s warm-up) per run")
    raw = {(s.name, c): [] for s in servers for c in conns}
    errors = {(s.name, c): [] for s in servers for c in conns}
    with ServerSet(servers) as ss:
        live = ss.running()
        total = rounds * len(conns) * len(live)
        done = 0
        for r in range(rounds):
            for c in conns:
                parts = []
                for s in rotated(live, r):
                    if not s.alive():
                        s.mark_dead()
                        parts.append(f"{s.name} dead")
                        done += 1
                        continue
                    cmd = [str(client), "--port", str(s.port), "--connections", str(c), "--block", str(block),
                           "--seconds", str(cfg["tput_seconds"]), "--warmup", str(cfg["tput_warmup"]), "--json"]
                    res, err = run_json(cmd, timeout=cfg["tput_seconds"] + cfg["tput_warmup"] + 60)
                    done += 1
                    if res and isinstance(res.get("mib_per_s"), (int, float)):
                        raw[(s.name, c)].append(res)
                        parts.append(f"{s.name} {res['mib_per_s']:.0f}")
                    else:
                        errors[(s.name, c)].append(err or "no mib_per_s in the output")
                        parts.append(f"{s.name} ERROR")
                        if not s.alive():
                            s.mark_dead()
                progress(done, total, f"round {r + 1}/{rounds} {c:>4} conn  MiB/s: " + " | ".join(parts))
        server_desc = {s.name: s.describe() for s in servers}

    rows = []
    for c in conns:
        floor_v = median_of(raw[(FLOOR, c)], "mib_per_s")
        for s in servers:
            rr = raw[(s.name, c)]
            row = {"server": s.name, "label": s.label, "connections": c, "rounds": rr}
            if rr:
                row["status"] = "ok"
                row["mib_per_s"] = median_of(rr, "mib_per_s")
                row["ratio_to_floor"] = ratio(row["mib_per_s"], floor_v)
            else:
                row["status"] = s.status if s.status != "ok" else "failed"
            if errors[(s.name, c)]:
                row["errors"] = errors[(s.name, c)]
            rows.append(row)

    say(f"\n  MiB/s (medians over {rounds} round(s)); (x floor) = server / floor-echo, higher is better")
    trows = []
    for s in servers:
        line = [s.label]
        for c in conns:
            row = next(x for x in rows if x["server"] == s.name and x["connections"] == c)
            line.append(f"{row['mib_per_s']:.0f} ({fmt_ratio(row['ratio_to_floor'])})" if row["status"] == "ok"
                        else row["status"])
        trows.append(line)
    say(table(["server"] + [f"{c} conn" for c in conns], trows))
    coro = pair_ratios(rows, "keel-echo-coro/1loop", ["keel-echo/1loop", "asio-coro-echo"], "mib_per_s",
                       "connections")
    say("  coroutine throughput (keel-echo --coroutine / peer; goal >= 0.97 x keel-echo): "
        + "; ".join(f"{c} conn " + ", ".join(f"{k} {fmt_ratio(v)}" for k, v in d.items()) for c, d in coro.items()))
    uring = uring_summary(rows, servers, ("mib_per_s",), "connections", "conn", "keel-echo/1loop")
    return {
        "status": "ok",
        "coroutine_ratios": coro,
        "uring_ratios": uring,
        "client": "keel-tput",
        "block": block,
        "connections": conns,
        "rounds": rounds,
        "seconds": cfg["tput_seconds"],
        "warmup_s": cfg["tput_warmup"],
        "floor": FLOOR,
        "servers": server_desc,
        "rows": rows,
    }


# ---- section 6: micro-benchmarks -------------------------------------------------


def run_gbench(binary, min_time, filt):
    if not binary.is_file():
        say(f"  {binary.name}: not built")
        return {"status": "not built", "binary": rel(binary)}
    with tempfile.NamedTemporaryFile(prefix="keel-gbench-", suffix=".json", delete=False) as f:
        out = f.name
    cmd = [str(binary), f"--benchmark_min_time={min_time}", f"--benchmark_out={out}", "--benchmark_out_format=json"]
    if filt:
        cmd.append(f"--benchmark_filter={filt}")
    say(f"  $ {binary.name} {' '.join(cmd[1:2] + cmd[4:])}")
    try:
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=240)
        for ln in r.stdout.splitlines():
            say("    " + ln)
        data = json.loads(Path(out).read_text()) if r.returncode == 0 else None
    except (subprocess.TimeoutExpired, OSError, json.JSONDecodeError) as e:
        return {"status": "failed", "binary": rel(binary), "error": str(e)}
    finally:
        try:
            os.unlink(out)
        except OSError:
            pass
    if data is None:
        return {"status": "failed", "binary": rel(binary), "error": f"exit {r.returncode}: {r.stderr.strip()[-300:]}"}
    keep = ("name", "run_type", "iterations", "real_time", "cpu_time", "time_unit", "bytes_per_second",
            "items_per_second", "error_occurred", "error_message")
    benches = []
    for b in data.get("benchmarks", []):
        e = {k: b[k] for k in keep if k in b}
        extra = {k: v for k, v in b.items() if k not in keep and isinstance(v, (int, float))
                 and k not in ("family_index", "per_family_instance_index", "repetitions", "repetition_index", "threads")}
        if extra:
            e["counters"] = extra
        benches.append(e)
    ctx = data.get("context", {})
    return {
        "status": "ok",
        "binary": rel(binary),
        "min_time_s": min_time,
        "filter": filt or None,
        "library_build_type": ctx.get("library_build_type"),
        "benchmarks": benches,
    }


def section_micro(cfg, bindir):
    say("\n== 6. micro-benchmarks (Google Benchmark)")
    return {
        "timer_bench": run_gbench(bindir / "timer_bench", cfg["micro_min_time"], cfg["timer_filter"]),
        "micro_bench": run_gbench(bindir / "micro_bench", cfg["micro_min_time"], ""),
    }


# ---- plots -----------------------------------------------------------------------


def plot_latency(lat, path, work):
    rows = [r for r in lat.get("rows", []) if r.get("status") == "ok"]
    if not rows:
        say("  latency: no figures to plot")
        return False
    sizes = lat["sizes"]
    servers = []
    for r in rows:
        if r["server"] not in servers:
            servers.append(r["server"])
    labels = {r["server"]: r["label"] for r in rows}
    data = work / "latency.dat"
    with open(data, "w") as f:
        for size in sizes:
            f.write(f"# size {size}\n")
            for i, k in enumerate(PERCENTILES):
                vals = []
                for s in servers:
                    row = next((r for r in rows if r["server"] == s and r["size"] == size), None)
                    vals.append(f"{row[k]:.3f}" if row else "NaN")
                f.write(f"{i} {PCT_LABELS[k]} " + " ".join(vals) + "\n")
            f.write("\n\n")
    ncol = 3 if len(sizes) > 4 else 2 if len(sizes) > 1 else 1
    nrow = (len(sizes) + ncol - 1) // ncol
    script = [
        f"set terminal pngcairo size {480 * ncol},{380 * nrow} font 'sans,9' noenhanced",
        f"set output {gp_str(path)}",
        "set datafile missing 'NaN'",
        "set logscale y",
        "set grid ytics mytics xtics",
        "set ylabel 'round trip (us)'",
        "set xrange [-0.3:4.3]",
        "set key top left font 'sans,8'",
        f"set multiplot layout {nrow},{ncol} title "
        + gp_str(f"keel bench: ping-pong latency percentiles per server (medians over {lat['rounds']} rounds, "
                 f"{lat['count']} round trips each)"),
    ]
    for bi, size in enumerate(sizes):
        plots = []
        for si, s in enumerate(servers):
            plots.append(f"{gp_str(data)} index {bi} using 1:{si + 3}:xtic(2) with linespoints lw 2 pt 7 ps 0.8 "
                         f"title {gp_str(labels[s])}")
        script.append(f"set title {gp_str(f'{size} B')}")
        script.append("plot " + ", ".join(plots))
    script.append("unset multiplot")
    return run_gnuplot(script, work / "latency.gp")


def plot_throughput(tp, path, work):
    rows = [r for r in tp.get("rows", []) if r.get("status") == "ok"]
    if not rows:
        say("  throughput: no figures to plot")
        return False
    servers, labels = [], {}
    for r in rows:
        if r["server"] not in servers:
            servers.append(r["server"])
            labels[r["server"]] = r["label"]
    conns = tp["connections"]
    data = work / "tput.dat"
    with open(data, "w") as f:
        f.write("conns " + " ".join(gp_str(labels[s]) for s in servers) + "\n")
        for c in conns:
            vals = []
            for s in servers:
                row = next((r for r in rows if r["server"] == s and r["connections"] == c), None)
                vals.append(f"{row['mib_per_s']:.1f}" if row else "NaN")
            f.write(f"{gp_str(str(c) + ' conn')} " + " ".join(vals) + "\n")
    script = [
        "set terminal pngcairo size 1000,500 font 'sans,10' noenhanced",
        f"set output {gp_str(path)}",
        "set title " + gp_str(f"keel bench: {tp['block'] // 1024} KiB ping-pong throughput (medians over "
                              f"{tp['rounds']} rounds)"),
        "set datafile missing 'NaN'",
        "set style data histograms",
        "set style histogram clustered gap 1",
        "set style fill solid 0.8 border -1",
        "set ylabel 'MiB/s'",
        "set yrange [0:*]",
        "set grid ytics",
        "set key outside right top autotitle columnhead",
        f"set xrange [-0.6:{len(conns) - 0.4}]",
        "plot " + ", ".join(f"{gp_str(data)} using {i + 2}:xtic(1)" for i in range(len(servers))),
    ]
    return run_gnuplot(script, work / "tput.gp")


def finite(v):
    """JSON has no NaN or infinity: such a figure becomes null."""
    if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
        return None
    if isinstance(v, dict):
        return {k: finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [finite(x) for x in v]
    return v


# ---- the plan: built-in sections plus bench/sections/*.py ------------------------


class Section:
    """One section of the run. Built-in ones print their own header; a module in
    bench/sections/ defines NUMBER, KEY, TITLE, run(quick, bindir) -> dict and
    optionally plot(data, png, workdir) -> bool, and gets its header printed."""

    def __init__(self, number, key, title, run, plot=None, builtin=None):
        self.number, self.key, self.title, self.run, self.plot, self.builtin = number, key, title, run, plot, builtin


def section_plan(here):
    plan = [
        Section(1, "latency", "small-packet ping-pong latency", lambda c, b, q: section_latency(c, b), builtin=True),
        Section(3, "throughput", "ping-pong throughput", lambda c, b, q: section_throughput(c, b), builtin=True),
        Section(6, "micro", "micro-benchmarks", lambda c, b, q: section_micro(c, b), builtin=True),
    ]
    for path in sorted((here / "sections").glob("*.py")):
        if path.name.startswith("_"):
            continue
        spec = importlib.util.spec_from_file_location(f"keel_bench_{path.stem}", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        run = mod.run
        plan.append(Section(mod.NUMBER, mod.KEY, mod.TITLE, lambda c, b, q, run=run: run(q, b),
                            getattr(mod, "plot", None)))
    plan.sort(key=lambda sec: sec.number)
    return plan


# ---- main ------------------------------------------------------------------------


def main():
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description="keel bench suite: latency, Nagle matrix, throughput, micro-benchmarks")
    ap.add_argument("--build", default="build/release", help="CMake build directory (binaries in BUILD/bin)")
    ap.add_argument("--out", default=str(here / "results"), help="results directory")
    ap.add_argument("--quick", action="store_true", help="short mode (also QUICK=1 in the environment)")
    plan = section_plan(here)
    keys = ",".join(sec.key for sec in plan)
    ap.add_argument("--sections", default=keys, help=f"comma-separated subset of {keys}")
    ap.add_argument("--list", action="store_true", help="list the sections and exit")
    args = ap.parse_args()
    if args.list:
        for sec in plan:
            say(f"{sec.number:>2}. {sec.key:<18} {sec.title}")
        return 0

    quick = args.quick or os.environ.get("QUICK", "") not in ("", "0")

    def on_term(signo, frame):  # a SIGTERM stops the run like Ctrl-C: servers are stopped, results kept
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    cfg = QUICK if quick else FULL
    bindir = Path(args.build).resolve() / "bin"
    outdir = Path(args.out).resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    wanted = set(args.sections.split(","))
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")

    nofile_before, nofile_after = raise_nofile()
    machine = machine_info(nofile_before, nofile_after)
    load_start = loadavg()
    say(f"keel bench ({'QUICK' if quick else 'full'} mode) {stamp}")
    say(f"  binaries: {bindir}")
    say(f"  machine: {machine['cpu_model']}, {machine['cores']} cores, Linux {machine['kernel']}, "
        f"load average {' '.join(map(str, load_start or []))}")
    say(f"  open-file limit: soft {nofile_before[0]} (raised to {nofile_after[0]} for this run), hard {nofile_before[1]}")
    say("  sysctls: " + ", ".join(f"{k.split('.')[-1]}={v}" for k, v in machine["sysctls"].items()
                                  if any(t in k for t in ("keepalive", "tw_reuse", "port_range", "somaxconn"))))
    if (load_start or [0])[0] > (machine["cores"] or 1):
        say("  note: the machine is busy (load > cores); absolute figures are noisy, same-run ratios are what count")

    result = {
        "schema": SCHEMA,
        "timestamp_utc": stamp,
        "quick": quick,
        "git": git_info(here.parent),
        "machine": machine,
        "config": cfg,
        "sections": {},
    }
    sections = result["sections"]
    try:
        for sec in plan:
            if sec.key not in wanted:
                continue
            if sec.builtin is None:
                say(f"\n== {sec.number}. {sec.title}")
            try:
                sections[sec.key] = sec.run(cfg, bindir, quick)
            except KeyboardInterrupt:
                raise
            except Exception as e:  # one broken section must not lose the others' figures
                say(f"  section {sec.number} ({sec.key}) failed: {type(e).__name__}: {e}")
                sections[sec.key] = {"section": sec.number, "status": "failed", "error": f"{type(e).__name__}: {e}"}
    except KeyboardInterrupt:
        say("\ninterrupted: writing what was measured so far")
        result["interrupted"] = True

    result["load_average"] = {"start": load_start, "end": loadavg()}
    result["duration_s"] = round(time.monotonic() - T0, 1)

    # Plots.
    say("\n== plots")
    plots = {}
    if shutil.which("gnuplot") is None:
        say("  gnuplot not found: no plots (apt-get install gnuplot-nox)")
    else:
        with tempfile.TemporaryDirectory(prefix="keel-bench-plot-") as work:
            workp = Path(work)
            plotters = [("latency", plot_latency, "latency"), ("throughput", plot_throughput, "throughput")]
            plotters += [(sec.key, sec.plot, sec.key) for sec in plan if sec.plot is not None]
            for name, fn, key in plotters:
                if not isinstance(sections.get(key), dict) or sections[key].get("status") == "failed":
                    continue
                png = outdir / f"{stamp}-{name}.png"
                if fn(sections[key], png, workp):
                    latest = outdir / f"{name}-latest.png"
                    shutil.copyfile(png, latest)
                    plots[name] = {"png": rel(png), "latest": rel(latest)}
                    say(f"  {name}: {png} (and {latest.name})")
    result["plots"] = plots

    path = outdir / f"{stamp}.json"
    text = json.dumps(finite(result), indent=1, allow_nan=False) + "\n"
    path.write_text(text)
    shutil.copyfile(path, outdir / "latest.json")
    say(f"\nresults: {path} (and {outdir / 'latest.json'}), {result['duration_s']}s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
