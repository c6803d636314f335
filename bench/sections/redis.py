"""Section 8: keel-resp against redis-server, both on one thread, measured by
the real client: `redis-benchmark -t ping,set,get -c 50 --csv`, once without
pipelining and once with -P 16. Each round runs both servers (the order
rotates), and the table shows medians over rounds of requests/s and of the
p50/p99 latencies redis-benchmark reports, with the ratio keel/redis
(> 1 means keel-resp serves more requests per second). On a shared machine
requests/s swing with the neighbours' load, so the server's own CPU time
per request (utime+stime from /proc/PID/stat around each run, divided by
the run's requests) is reported as well: the steadier comparison.

Then the Nagle case: a client that keeps Nagle on and writes each PING in two
pieces ("*1\\r\\n$4\\r\\n", then "PING\\r\\n"). Its second piece waits for the
ACK of the first, which a server with delayed ACKs holds back ~40 ms;
keel-resp's default latency profile re-arms TCP_QUICKACK after each read, so
the ACK goes at once. keel-resp with --tcp kernel is shown as the control.
Each cell runs until its round-trip count or its time budget is reached.

redis-server runs with `--save '' --appendonly no` on a free port picked
here (it cannot take port 0), bound to 127.0.0.1.
"""

import csv
import io
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import benchlib
from benchlib import say, progress, table, fmt_ratio

NUMBER = 8
KEY = "redis"
TITLE = "keel-resp vs redis-server: redis-benchmark ping/set/get, and a Nagle client"

# Runs long enough that one scheduling hiccup does not decide a ratio: with
# 10,000 requests a test lasted 0.1-0.2 s and ratios swung by 15 %. This
# makes the section about 45 s in full mode, past the ~30 s guideline of
# bench/sections/README.md, which the full suite's 5-minute budget allows.
FULL = {"rounds": 3, "n_p1": 50000, "n_p16": 500000, "nagle_count": 200, "nagle_budget_s": 1.2}
QUICK = {"rounds": 1, "n_p1": 4000, "n_p16": 40000, "nagle_count": 100, "nagle_budget_s": 0.6}
CLIENTS = 50
TESTS = ["PING_INLINE", "PING_MBULK", "SET", "GET"]
PIPELINES = [1, 16]
NAGLE_MIN = 10  # round trips per Nagle cell even when each one stalls


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """redis-server on a free port; the same surface as benchlib.Server."""

    def __init__(self):
        self.name = "redis-server"
        self.label = "redis-server"
        self.binary = shutil.which("redis-server")
        self.proc = None
        self.port = None
        self.status = "not started"
        self.error = None
        self.version = None

    def start(self, timeout=10.0):
        if not self.binary:
            self.status, self.error = "not installed", "redis-server not on PATH (scripts/install-deps.sh)"
            return False
        try:
            v = subprocess.run([self.binary, "--version"], capture_output=True, text=True, timeout=5).stdout
            self.version = v.split()[2].removeprefix("v=") if len(v.split()) > 2 else v.strip()
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.port = free_port()
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--protected-mode", "no"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        self.status = "ok"
                        return True
            except OSError:
                time.sleep(0.05)
        self.status, self.error = "failed", f"no PONG on port {self.port} (exit {self.proc.poll()})"
        self.stop()
        return False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None and self.status == "ok"

    def mark_dead(self):
        if self.status == "ok":
            self.status, self.error = "failed", f"exited during the run (status {self.proc.poll()})"

    def stop(self):
        benchlib.terminate(self.proc)
        self.proc = None

    def describe(self):
        d = {"binary": self.binary, "version": self.version, "status": self.status,
             "args": ["--save", "''", "--appendonly", "no", "--bind", "127.0.0.1"]}
        if self.error:
            d["error"] = self.error
        return d


def bench_once(port, n, pipeline):
    """One redis-benchmark run; ({test: {rps, p50_ms, p99_ms}}, error)."""
    cmd = ["redis-benchmark", "-p", str(port), "-t", "ping,set,get", "-n", str(n), "-c", str(CLIENTS),
           "-P", str(pipeline), "--csv"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None, "redis-benchmark timed out"
    if r.returncode != 0:
        return None, f"redis-benchmark exit {r.returncode}: {(r.stderr or r.stdout).strip()[-200:]}"
    out = {}
    for row in csv.DictReader(io.StringIO(r.stdout)):
        try:
            out[row["test"]] = {"rps": float(row["rps"]), "p50_ms": float(row["p50_latency_ms"]),
                                "p99_ms": float(row["p99_latency_ms"])}
        except (KeyError, ValueError):
            continue
    missing = [t for t in TESTS if t not in out]
    return (out, None) if not missing else (None, "no CSV row for " + ",".join(missing))


def nagle_pings(port, count, budget_s):
    """Round trips (µs) of a Nagle-on client writing each PING in two pieces."""
    samples = []
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)  # Nagle on, as the kernel default
        end = time.monotonic() + budget_s
        while len(samples) < count and (len(samples) < NAGLE_MIN or time.monotonic() < end):
            t = time.perf_counter_ns()
            s.sendall(b"*1\r\n$4\r\n")
            s.sendall(b"PING\r\n")
            got = b""
            while len(got) < 7:
                chunk = s.recv(64)
                if not chunk:
                    raise OSError("server closed")
                got += chunk
            samples.append((time.perf_counter_ns() - t) / 1000.0)
    return samples


def cpu_seconds(pid):
    """utime + stime of a process, in seconds (None when unreadable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def pct(samples, q):
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))] if s else None


def fmt_rps(v):
    return "-" if v is None else (f"{v / 1000:.1f}k" if v < 1e6 else f"{v / 1e6:.2f}M")


def fmt_ms(v):
    return "-" if v is None else f"{v:.3f}"


def run(quick, bindir):
    cfg = QUICK if quick else FULL
    say(f"\n== {NUMBER}. {TITLE}")
    result = {"section": NUMBER, "config": {**cfg, "clients": CLIENTS, "tests": TESTS, "pipelines": PIPELINES}}
    if not shutil.which("redis-benchmark"):
        say("  redis-benchmark not installed; section skipped")
        return {**result, "status": "skipped: redis-benchmark not installed"}
    keel = benchlib.Server("keel-resp", Path(bindir) / "keel-resp", [], "keel-resp (latency)")
    keel_kernel = benchlib.Server("keel-resp/kernel", Path(bindir) / "keel-resp", ["--tcp", "kernel"],
                                  "keel-resp --tcp kernel")
    redis = RedisServer()
    servers = [keel, redis]
    say(f"  redis-benchmark -c {CLIENTS} -t ping,set,get --csv; -n {cfg['n_p1']} (no pipeline) / "
        f"{cfg['n_p16']} (-P 16); {cfg['rounds']} round(s), medians")
    raw = {(s.name, p): [] for s in servers for p in PIPELINES}
    errors = []
    nagle = {}
    with benchlib.ServerSet([keel, keel_kernel]) as _:
        ok = redis.start()
        say(f"  {redis.label:<22} " + (f"port {redis.port} (v{redis.version})" if ok else f"{redis.status} ({redis.error})"))
        try:
            live = [s for s in servers if s.status == "ok"]
            total = cfg["rounds"] * len(live) * len(PIPELINES)
            done = 0
            for r in range(cfg["rounds"]):
                for p in PIPELINES:
                    for s in benchlib.rotated(live, r + p):
                        if not s.alive():
                            s.mark_dead()
                            continue
                        n = cfg["n_p1"] if p == 1 else cfg["n_p16"]
                        c0 = cpu_seconds(s.proc.pid)
                        res, err = bench_once(s.port, n, p)
                        c1 = cpu_seconds(s.proc.pid)
                        done += 1
                        if res:
                            if c0 is not None and c1 is not None:
                                res["cpu_us_per_req"] = round((c1 - c0) * 1e6 / (n * len(TESTS)), 3)
                            raw[(s.name, p)].append(res)
                            progress(done, total, f"{s.name} -P {p}: " + " ".join(
                                f"{t} {fmt_rps(res[t]['rps'])}" for t in TESTS))
                        else:
                            errors.append(f"{s.name} -P {p}: {err}")
                            progress(done, total, f"{s.name} -P {p}: {err}")

            # The Nagle client, one cell per server (a stalled cell costs ~40 ms a round trip).
            for s in [keel, keel_kernel, redis]:
                if s.status != "ok" or not s.alive():
                    continue
                try:
                    smp = nagle_pings(s.port, cfg["nagle_count"], cfg["nagle_budget_s"])
                    nagle[s.name] = {"round_trips": len(smp), "p50_us": round(pct(smp, 0.5), 1),
                                     "p99_us": round(pct(smp, 0.99), 1), "max_us": round(max(smp), 1)}
                except OSError as e:
                    nagle[s.name] = {"error": str(e)}
        finally:
            redis.stop()

    rows, out_rows = [], []
    for p in PIPELINES:
        for t in TESTS:
            med = {}
            for s in servers:
                runs = raw[(s.name, p)]
                med[s.name] = {k: (statistics.median([x[t][k] for x in runs]) if runs else None)
                               for k in ("rps", "p50_ms", "p99_ms")}
            k, rd = med["keel-resp"], med["redis-server"]
            ratio = benchlib.ratio(k["rps"], rd["rps"])
            out_rows.append({"test": t, "pipeline": p, "keel-resp": k, "redis-server": rd, "rps_ratio": ratio})
            rows.append([t, str(p), fmt_rps(k["rps"]), fmt_rps(rd["rps"]), fmt_ratio(ratio),
                         f"{fmt_ms(k['p50_ms'])}/{fmt_ms(rd['p50_ms'])}", f"{fmt_ms(k['p99_ms'])}/{fmt_ms(rd['p99_ms'])}"])
    say("")
    say(table(["test", "-P", "keel rps", "redis rps", "keel/redis", "p50 ms keel/redis", "p99 ms keel/redis"], rows,
              "llrrrrr"))
    cpu_rows, cpu_out = [], {}
    for p in PIPELINES:
        med = {s.name: benchlib.median_of(raw[(s.name, p)], "cpu_us_per_req") for s in servers}
        r = benchlib.ratio(med["keel-resp"], med["redis-server"])
        cpu_out[str(p)] = {**med, "ratio": r}
        cpu_rows.append([str(p), benchlib.fmt_us(med["keel-resp"]), benchlib.fmt_us(med["redis-server"]),
                         fmt_ratio(r)])
    say("\n  server CPU time per request (µs, all four tests; < 1x means keel-resp spends less):")
    say(table(["-P", "keel-resp", "redis-server", "keel/redis"], cpu_rows))
    if nagle:
        say("\n  Nagle-on client, PING written in two pieces (round trip, µs):")
        nrows = []
        for s in [keel, keel_kernel, redis]:
            c = nagle.get(s.name)
            if c is None:
                continue
            if "error" in c:
                nrows.append([s.label, c["error"]])
            else:
                nrows.append([s.label, str(c["round_trips"]), benchlib.fmt_us(c["p50_us"]),
                              benchlib.fmt_us(c["p99_us"])])
        say(table(["server", "round trips", "p50", "p99"], nrows))
    for e in errors:
        say(f"  error: {e}")
    result.update({
        "status": "ok" if all(raw[(s.name, p)] for s in servers for p in PIPELINES) else "partial",
        "servers": {"keel-resp": keel.describe(), "keel-resp/kernel": keel_kernel.describe(),
                    "redis-server": redis.describe()},
        "rows": out_rows,
        "rounds": {f"{s.name} -P {p}": raw[(s.name, p)] for s in servers for p in PIPELINES},
        "cpu_us_per_request": cpu_out,
        "nagle_two_pieces": nagle,
        "errors": errors,
    })
    return result
