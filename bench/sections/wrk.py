"""Section 9: wrk against keel-http (GET / -> "hello\\n"), keep-alive against
close per request.

wrk (one thread, `--latency`) loads keel-http:
  c=1              one keep-alive connection: the request/response round trip;
  c=50             fifty keep-alive connections on keel-http's single loop;
  c=50, 2 threads  the same load on keel-http --threads 2 (two I/O loops);
  c=1 / c=50, Connection: close
                   wrk with -H "Connection: close": a connection per request.
                   keel-http answers and then shuts its side down, and wrk
                   closes as soon as the response is parsed, so both race to
                   send the first FIN;
  keel Client, PeerFirst / LocalFirst
                   keel-http-close (bench/http_close_client.cc): one request
                   per connection on keel's Client, which with
                   ClientOptions::Close::PeerFirst waits for keel-http's FIN
                   before closing, so TIME_WAIT lands on the server; LocalFirst
                   closes as soon as the response is in, as wrk does.
Every run gets a keel-http of its own on a fresh port, so the TIME_WAIT
entries left on that port after the run (server side: local port; client
side: remote port; /proc/net/tcp, once nothing is still closing) are that
run's. net.ipv4.tcp_tw_reuse (2 by default: on for loopback) lets a client
reuse its own TIME_WAIT pairs, and a server's TIME_WAIT slot is taken over by
a new SYN from the same client port, so a count can be below the number of
connections; both are the kernel's real behaviour.

The machine has 2 cores shared with wrk itself, so the 2-thread row shows
what a second loop buys when the client takes a core too, not a scaling
curve. Each round runs every row once, in an order that rotates from round
to round; figures are medians over rounds of requests/s and of the latency
percentiles (wrk measures each request's latency from the moment it is
sent; keel-http-close the same, and also the whole connect-to-closed cycle).

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
TITLE = "HTTP against keel-http: keep-alive and close per request (requests/s, latency, TIME_WAIT per side)"

FULL = {"rounds": 3, "seconds": 2}
QUICK = {"rounds": 1, "seconds": 1}
# (key, label, keel-http arguments, connections, client)
ROWS = [("c1", "c=1", [], 1, "wrk"), ("c50", "c=50", [], 50, "wrk"),
        ("c50_t2", "c=50, --threads 2", ["--threads", "2"], 50, "wrk"),
        ("c1_close", "c=1, Connection: close", [], 1, "wrk-close"),
        ("c50_close", "c=50, Connection: close", [], 50, "wrk-close"),
        ("keel_peer_first", "keel Client, PeerFirst", [], 1, "peer-first"),
        ("keel_local_first", "keel Client, LocalFirst", [], 1, "local-first")]
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


def run_client(kind, conns, port, seconds, bindir):
    """One measured run against keel-http on `port`: (figures, error)."""
    if kind in ("peer-first", "local-first"):
        client = bindir / "keel-http-close"
        if not client.is_file():
            return None, "keel-http-close not built"
        fig, err = benchlib.run_json([str(client), "--port", str(port), "--seconds", str(seconds), "--close", kind,
                                      "--json"], timeout=seconds + 30)
        if fig:
            fig["socket_errors"] = fig.get("connect_failures", 0) + fig.get("unanswered", 0)
            fig["non_2xx"] = fig.get("bad_responses", 0)
        return fig, err
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency"]
    if kind == "wrk-close":
        cmd += ["-H", "Connection: close"]
    try:
        p = subprocess.run(cmd + [f"http://127.0.0.1:{port}/"], capture_output=True, text=True, timeout=seconds + 20,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None, "wrk timed out"
    return parse(p.stdout + p.stderr) if p.returncode == 0 else (None, f"wrk exit {p.returncode}")


def run(quick, bindir):
    cfg = QUICK if quick else FULL
    data = {"section": NUMBER, "rounds": cfg["rounds"], "seconds_per_run": cfg["seconds"], "wrk_threads": 1,
            "url_path": "/", "results": {},
            "tcp_tw_reuse": benchlib.read_text("/proc/sys/net/ipv4/tcp_tw_reuse")}
    if shutil.which("wrk") is None:
        data["status"] = "skipped: wrk not installed (scripts/install-deps.sh)"
        say("  " + data["status"])
        return data
    binary = bindir / "keel-http"
    rounds = {k: [] for k, *_ in ROWS}
    errors = {}
    jobs = []
    for r in range(cfg["rounds"]):
        jobs += [(r, row) for row in benchlib.rotated(ROWS, r)]
    for n, (r, (key, label, args, conns, kind)) in enumerate(jobs, 1):
        srv = benchlib.Server(f"keel-http-{key}", binary, args, label="keel-http " + " ".join(args))
        if not srv.start():
            errors[key] = f"keel-http: {srv.status}" + (f" ({srv.error})" if srv.error else "")
            progress(n, len(jobs), f"round {r + 1} {label:<24} {errors[key]}")
            continue
        try:
            fig, err = run_client(kind, conns, srv.port, cfg["seconds"], bindir)
            # What the run left behind, before the server stops (its stop would close what is still open).
            states = benchlib.settled_states(srv.port)
        finally:
            srv.stop()
        if fig is None:
            errors[key] = err
            progress(n, len(jobs), f"round {r + 1} {label:<24} error: {err}")
            continue
        fig["tw_server"] = states["server"].get("time_wait", 0)
        fig["tw_client"] = states["client"].get("time_wait", 0)
        fig["states_after"] = states
        rounds[key].append(fig)
        progress(n, len(jobs), f"round {r + 1} {label:<24} {fig['rps']:>9.0f} req/s  p50 {us(fig['p50_us'])}  "
                 f"p99 {us(fig['p99_us'])}  TIME_WAIT server {fig['tw_server']} client {fig['tw_client']}")
    data["server"] = {"binary": benchlib.rel(binary), "note": "a fresh keel-http (--port 0 plus the row's arguments)"
                      " for every run"}

    rows = []
    for key, label, args, conns, kind in ROWS:
        rs = rounds[key]
        entry = {"connections": conns, "client": kind, "server_args": args, "rounds": rs,
                 "connection_close": kind != "wrk"}
        server_label = "keel-http " + " ".join(args)
        if rs:
            entry["rps"] = benchlib.median_of(rs, "rps")
            for p in PCTS:
                entry[f"p{p}_us"] = benchlib.median_of(rs, f"p{p}_us")
            for k in ("cycle_p50_us", "cycle_p99_us", "tw_server", "tw_client", "requests"):
                if any(k in x for x in rs):
                    entry[k] = benchlib.median_of(rs, k)
            # Little's law: with `conns` requests always in flight, the mean
            # latency is conns / throughput. wrk's own latency statistics
            # disagree with it at c=1 on this VM (see the module comment).
            entry["mean_us_from_rps"] = round(conns / entry["rps"] * 1e6, 1) if entry["rps"] else None
            # keel-http-close counts its warm-up connections; wrk makes one per request under close.
            if any("connections" in x for x in rs):
                made = benchlib.median_of(rs, "connections")
            else:
                made = entry["requests"] if kind == "wrk-close" else conns
            entry["connections_made"] = made
            entry["tw_per_connection_server"] = benchlib.ratio(entry["tw_server"], made)
            entry["tw_per_connection_client"] = benchlib.ratio(entry["tw_client"], made)
            entry["socket_errors"] = sum(x["socket_errors"] for x in rs)
            entry["non_2xx"] = sum(x["non_2xx"] for x in rs)
            rows.append([label, server_label, f"{entry['rps']:.0f}", benchlib.fmt_us(entry["mean_us_from_rps"]),
                         *[benchlib.fmt_us(entry[f"p{p}_us"]) for p in PCTS],
                         benchlib.fmt_us(entry.get("cycle_p50_us")),
                         f"{entry['socket_errors']}/{entry['non_2xx']}",
                         f"{entry['tw_server']:.0f}", f"{entry['tw_client']:.0f}"])
        else:
            rows.append([label, server_label, f"no figures: {errors.get(key, 'not run')}"])
        if key in errors:
            entry["error"] = errors[key]
        data["results"][key] = entry
    say(table(["load", "server", "req/s", "c/(req/s) us", "p50 us", "p75 us", "p90 us", "p99 us", "cycle p50",
               "sock err/non-2xx", "TIME_WAIT srv", "TIME_WAIT cli"], rows, "llrrrrrrrrrr"))
    say("  TIME_WAIT: entries left on the run's port after it (medians over rounds); connections_made and"
        " tw_per_connection_* in the JSON. cycle: connect() to closed, keel Client rows only.")
    data["status"] = "ok"
    return data
