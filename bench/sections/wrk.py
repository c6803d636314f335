"""Section 9: wrk against keel-http (GET / -> "hello\\n", keep-alive).

wrk (one thread, `--latency`) loads keel-http over keep-alive connections:
  c=1              one connection: the request/response round trip;
  c=50             fifty connections on keel-http's single loop;
  c=50, 2 threads  the same load on keel-http --threads 2 (two I/O loops).
The machine has 2 cores shared with wrk itself, so the 2-thread row shows
what a second loop buys when the client takes a core too, not a scaling
curve. Each round runs every row once, in an order that rotates from round
to round; figures are medians over rounds of wrk's requests/s and of its
latency percentiles (wrk measures each request's latency from the moment it
is sent, over all connections). No peer server is compared here; section 1
has the echo-server peers.

A run with socket errors or non-2xx responses is reported as such (the
tests assert there are none: tests/examples/http_test.cc).

A caution on wrk's latency figures here: at c=1 wrk reported a mean of
~500 us and a p90 of ~2 ms while completing ~27k requests/s over its one
connection, which allows a mean of only ~37 us; a plain sequential client
measured p50 16.6 us, p90 17.8 us, p99 46 us against the same server. So the
table also gives connections / (requests/s), the mean latency that the
throughput implies (Little's law), next to wrk's percentiles.
"""

import re
import shutil
import subprocess

import benchlib
from benchlib import say, progress, table

NUMBER = 9
KEY = "wrk"
TITLE = "HTTP: wrk against keel-http (requests/s, latency percentiles)"

FULL = {"rounds": 3, "seconds": 2}
QUICK = {"rounds": 1, "seconds": 1}
# (key, label, server name, connections)
ROWS = [("c1", "c=1", "keel-http", 1), ("c50", "c=50", "keel-http", 50),
        ("c50_t2", "c=50, --threads 2", "keel-http-t2", 50)]
PCTS = ["50", "75", "90", "99"]

UNIT = {"us": 1.0, "ms": 1000.0, "s": 1e6}
PCT_RE = re.compile(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
RPS_RE = re.compile(r"Requests/sec:\s+([\d.]+)")
TOTAL_RE = re.compile(r"(\d+) requests in ([\d.]+)(us|ms|s|m)")
SOCKERR_RE = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
NON2XX_RE = re.compile(r"Non-2xx or 3xx responses: (\d+)")


def parse(out):
    m = RPS_RE.search(out)
    t = TOTAL_RE.search(out)
    pct = {p: float(v) * UNIT[u] for p, v, u in PCT_RE.findall(out)}
    if not m or not t or "50" not in pct:
        tail = " | ".join(out.strip().splitlines()[-2:])
        return None, f"no summary in wrk's output: {tail[:200]}"
    r = {"rps": float(m.group(1)), "requests": int(t.group(1))}
    for p in PCTS:
        r[f"p{p}_us"] = pct.get(p)
    e = SOCKERR_RE.search(out)
    r["socket_errors"] = sum(map(int, e.groups())) if e else 0
    n = NON2XX_RE.search(out)
    r["non_2xx"] = int(n.group(1)) if n else 0
    return r, None


def us(v):
    t = benchlib.fmt_us(v)
    return t if t.endswith("ms") or t == "-" else t + "us"


def run(quick, bindir):
    cfg = QUICK if quick else FULL
    data = {"section": NUMBER, "rounds": cfg["rounds"], "seconds_per_run": cfg["seconds"], "wrk_threads": 1,
            "url_path": "/", "results": {}}
    if shutil.which("wrk") is None:
        data["status"] = "skipped: wrk not installed (scripts/install-deps.sh)"
        say("  " + data["status"])
        return data
    servers = {
        "keel-http": benchlib.Server("keel-http", bindir / "keel-http", [], label="keel-http"),
        "keel-http-t2": benchlib.Server("keel-http-t2", bindir / "keel-http", ["--threads", "2"],
                                        label="keel-http --threads 2"),
    }
    rounds = {k: [] for k, *_ in ROWS}
    errors = {}
    with benchlib.ServerSet(list(servers.values())):
        jobs = []
        for r in range(cfg["rounds"]):
            jobs += [(r, row) for row in benchlib.rotated(ROWS, r)]
        for n, (r, (key, label, sname, conns)) in enumerate(jobs, 1):
            srv = servers[sname]
            if not srv.alive():
                if srv.status == "ok":
                    srv.mark_dead()
                errors[key] = f"{srv.label}: {srv.status}" + (f" ({srv.error})" if srv.error else "")
                progress(n, len(jobs), f"round {r + 1} {label:<18} {errors[key]}")
                continue
            cmd = ["wrk", "-t1", f"-c{conns}", f"-d{cfg['seconds']}s", "--latency", f"http://127.0.0.1:{srv.port}/"]
            try:
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=cfg["seconds"] + 20,
                                   stdin=subprocess.DEVNULL)
                fig, err = parse(p.stdout + p.stderr) if p.returncode == 0 else (None, f"wrk exit {p.returncode}")
            except subprocess.TimeoutExpired:
                fig, err = None, "wrk timed out"
            if fig is None:
                errors[key] = err
                progress(n, len(jobs), f"round {r + 1} {label:<18} error: {err}")
                continue
            rounds[key].append(fig)
            progress(n, len(jobs), f"round {r + 1} {label:<18} {fig['rps']:>9.0f} req/s  "
                     f"p50 {us(fig['p50_us'])}  p99 {us(fig['p99_us'])}")
        data["servers"] = {k: s.describe() for k, s in servers.items()}

    rows = []
    for key, label, sname, conns in ROWS:
        rs = rounds[key]
        entry = {"connections": conns, "server": servers[sname].label, "rounds": rs}
        if rs:
            entry["rps"] = benchlib.median_of(rs, "rps")
            for p in PCTS:
                entry[f"p{p}_us"] = benchlib.median_of(rs, f"p{p}_us")
            # Little's law: with `conns` requests always in flight, the mean
            # latency is conns / throughput. wrk's own latency statistics
            # disagree with it at c=1 on this VM (see the module comment).
            entry["mean_us_from_rps"] = round(conns / entry["rps"] * 1e6, 1) if entry["rps"] else None
            entry["socket_errors"] = sum(x["socket_errors"] for x in rs)
            entry["non_2xx"] = sum(x["non_2xx"] for x in rs)
            rows.append([label, servers[sname].label, f"{entry['rps']:.0f}",
                         benchlib.fmt_us(entry["mean_us_from_rps"]),
                         *[benchlib.fmt_us(entry[f"p{p}_us"]) for p in PCTS],
                         f"{entry['socket_errors']}/{entry['non_2xx']}"])
        else:
            rows.append([label, servers[sname].label, f"no figures: {errors.get(key, 'not run')}"])
        if key in errors:
            entry["error"] = errors[key]
        data["results"][key] = entry
    say(table(["load", "server", "req/s", "c/(req/s) us", "p50 us", "p75 us", "p90 us", "p99 us",
               "sock err/non-2xx"], rows, "llrrrrrrr"))
    return data
