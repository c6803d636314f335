"""Section 13: server memory per idle connection, keel against libuv,
libevent and Asio (issue 16, the memory half).

Each server (one thread or loop each) is started alone; this process opens N
connections to it and, once all are accepted, reads the server's Rss
(/proc/PID/smaps_rollup); then it sends one byte on each and reads the echo
(so what a server allocates on its first read is counted, such as the 64 KiB
read buffer libuv-echo keeps per connection, of which one page is touched),
leaves them idle and reads it again. The figures are the growth from before
the first connection, divided by N; the goals use the second. Rounds are
interleaved (each round starts every server once, in a rotated order) and
the figure reported is the median over rounds, so the ratios compare servers
measured side by side on the same machine state.

keel-scale-server stands for a long-lived keel service,
[FrameCodec][Heartbeat][IdleReaper] on every connection; it speaks frames,
so its connections send nothing (the heartbeat is 10 min: no PING falls in
the run, the timer of every connection is armed). KEEL_BENCH_BASELINE_ECHO
and KEEL_BENCH_BASELINE_SCALE name older builds of keel-echo and
keel-scale-server, measured in the same rounds (before/after a change).

The kernel's share (the socket, about 3.6 KiB here, section 4) is in no
process's Rss and is the same for every server.
"""

import os
import re
import resource
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import benchlib
from benchlib import say, progress, table

NUMBER = 13
KEY = "idle_memory"
TITLE = "server memory per idle connection: keel vs libuv, libevent, Asio"

FULL = {"connections": 5000, "rounds": 3}
QUICK = {"connections": 1000, "rounds": 3}
FD_MARGIN = 64
GOAL_BARE = 512  # bytes per connection, keel-echo bare
GOAL_HEARTBEAT = 1024  # with Heartbeat and IdleReaper
TEN_MIN_MS = "600000"


def servers(bindir, n):
    scale_args = ["--keepalive-ms", TEN_MIN_MS, "--interval-ms", "1000", "--probes", "3", "--idle-ms", TEN_MIN_MS,
                  "--max-connections", str(n + 100)]
    out = [
        # (key, label, binary, args, sends a byte)
        ("keel-echo", "keel-echo (bare)", bindir / "keel-echo", ["--threads", "0"], True),
        ("keel-echo-idle", "keel-echo --idle-timeout-ms (IdleReaper)", bindir / "keel-echo",
         ["--threads", "0", "--idle-timeout-ms", TEN_MIN_MS], True),
        ("keel-scale", "keel-scale-server (FrameCodec+Heartbeat+IdleReaper)", bindir / "keel-scale-server",
         scale_args, False),
        ("libuv-echo", "libuv-echo", bindir / "libuv-echo", [], True),
        ("libevent-echo", "libevent-echo", bindir / "libevent-echo", [], True),
        ("asio-echo", "asio-echo", bindir / "asio-echo", [], True),
    ]
    base_echo = os.environ.get("KEEL_BENCH_BASELINE_ECHO")
    if base_echo:
        out.insert(1, ("keel-echo-baseline", "keel-echo (bare, baseline build)", Path(base_echo), ["--threads", "0"],
                       True))
    base_scale = os.environ.get("KEEL_BENCH_BASELINE_SCALE")
    if base_scale:
        out.insert(4 if base_echo else 3, ("keel-scale-baseline", "keel-scale-server (baseline build)",
                                           Path(base_scale), scale_args, False))
    return out


def start(binary, args, timeout=10.0):
    """The server on port 0, stdin kept open (keel-scale-server quits on EOF): (proc, port, log) or error."""
    log = tempfile.NamedTemporaryFile(prefix="keel-bench-idlemem-", suffix=".log", delete=False)
    proc = subprocess.Popen([str(binary), "--port", "0", *args], stdin=subprocess.PIPE, stdout=log,
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = benchlib.LISTEN_RE.search(Path(log.name).read_text(errors="replace"))
        if m:
            return proc, int(m.group(2)), log
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    stop(proc, log)
    return None, None, f"no 'listening on' line (exit {proc.returncode})"


def stop(proc, log):
    try:
        proc.stdin.close()
    except OSError:
        pass
    benchlib.terminate(proc)
    log.close()
    try:
        os.unlink(log.name)
    except OSError:
        pass


def one(binary, args, sends, n):
    """RSS growth per connection of one fresh server, or (None, error)."""
    proc, port, log = start(binary, args)
    if proc is None:
        return None, log
    conns = []
    try:
        time.sleep(0.1)  # let it finish starting (threads, first allocations)
        rss0, fds0 = benchlib.smaps_rollup(proc.pid).get("rss_kb"), benchlib.fd_count(proc.pid)
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conns.append(s)
        deadline = time.monotonic() + 10
        while benchlib.fd_count(proc.pid) < fds0 + n and time.monotonic() < deadline:
            time.sleep(0.02)
        accepted = benchlib.fd_count(proc.pid) - fds0
        time.sleep(0.2)  # the last accepts' allocations done
        rss1 = benchlib.smaps_rollup(proc.pid).get("rss_kb")
        if accepted < n:
            return None, f"only {accepted} of {n} connections accepted"
        rss2 = rss1
        if sends:  # one byte each way: what a server allocates on a first read stays now
            for s in conns:
                s.sendall(b"x")
                if s.recv(16) != b"x":
                    return None, "no echo"
            time.sleep(0.1)
            rss2 = benchlib.smaps_rollup(proc.pid).get("rss_kb")
        if proc.poll() is not None or None in (rss0, rss1, rss2):
            return None, f"server exited (status {proc.poll()})"
        return {"rss_before_kb": rss0, "rss_accepted_kb": rss1, "rss_after_echo_kb": rss2,
                "accepted_bytes_per_conn": round((rss1 - rss0) * 1024 / n, 1),
                "bytes_per_conn": round((rss2 - rss0) * 1024 / n, 1)}, None
    except OSError as e:
        return None, f"{type(e).__name__}: {e}"
    finally:
        for s in conns:
            s.close()
        stop(proc, log)


def run(quick, bindir):
    cfg = QUICK if quick else FULL
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    n = max(1, min(cfg["connections"], soft - FD_MARGIN))
    res = {"section": NUMBER, "quick": quick, "connections": n, "rounds": cfg["rounds"], "nofile_soft": soft,
           "nofile_hard": hard, "method": "Rss growth (smaps_rollup) over N connections, / N, once accepted and again after "
           "each echoed 1 byte (keel-scale-server: none); median over interleaved rounds", "rows": []}
    say(f"  {n} connections per server, {cfg['rounds']} interleaved rounds; open-file limit {soft} per process "
        f"(hard {hard}); this process holds the client ends")
    entries = servers(bindir, n)
    built = [e for e in entries if e[2].is_file()]
    raw = {e[0]: [] for e in entries}
    errors = {e[0]: [] for e in entries}
    total, done = cfg["rounds"] * len(built), 0
    for r in range(cfg["rounds"]):
        for key, label, binary, args, sends in benchlib.rotated(built, r):
            fig, err = one(binary, args, sends, n)
            done += 1
            if fig:
                raw[key].append(fig)
            else:
                errors[key].append(err)
            progress(done, total, f"round {r + 1}: {key} " + (f"{fig['bytes_per_conn']:.0f} B/conn" if fig else
                                                                 f"ERROR {err}"))
    med = {}
    for key, label, binary, args, sends in entries:
        row = {"server": key, "label": label, "binary": benchlib.rel(binary), "args": args, "sends_byte": sends,
               "rounds": raw[key]}
        if raw[key]:
            row["status"] = "ok"
            row["bytes_per_conn"] = round(statistics.median(x["bytes_per_conn"] for x in raw[key]), 1)
            row["accepted_bytes_per_conn"] = round(statistics.median(x["accepted_bytes_per_conn"] for x in raw[key]),
                                                   1)
            med[key] = row["bytes_per_conn"]
        else:
            row["status"] = "not built" if not binary.is_file() else "failed"
        if errors[key]:
            row["errors"] = errors[key]
        res["rows"].append(row)
    acc = {r["server"]: r["accepted_bytes_per_conn"] for r in res["rows"] if r["status"] == "ok"}
    for row in res["rows"]:
        if row["status"] == "ok":
            row["ratio"] = {f"/{p}": benchlib.ratio(row["bytes_per_conn"], med[p])
                            for p in ("libuv-echo", "libevent-echo", "asio-echo") if p in med}
            row["ratio_accepted"] = {f"/{p}": benchlib.ratio(row["accepted_bytes_per_conn"], acc[p])
                                     for p in ("libuv-echo", "libevent-echo", "asio-echo") if p in acc}
    verdict = lambda ok: "-" if ok is None else ("met" if ok else "MISSED")  # noqa: E731
    goals = {
        "bare_512": {"server": "keel-echo", "goal_bytes": GOAL_BARE, "measured": med.get("keel-echo")},
        "heartbeat_idle_1k": {"server": "keel-scale", "goal_bytes": GOAL_HEARTBEAT, "measured": med.get("keel-scale")},
    }
    for g in goals.values():
        g["verdict"] = verdict(None if g["measured"] is None else g["measured"] <= g["goal_bytes"])
    res["goals"] = goals
    res["status"] = "ok" if med else "failed"

    trows = []
    for row in res["rows"]:
        if row["status"] != "ok":
            trows.append([row["label"], row["status"], "", "", "", "", "", ""])
            continue
        goal = next((g for g in goals.values() if g["server"] == row["server"]), None)
        peers = ("/libuv-echo", "/libevent-echo", "/asio-echo")
        trows.append([row["label"], f"{row['accepted_bytes_per_conn']:,.0f} B", f"{row['bytes_per_conn']:,.0f} B",
                      " ".join(f"{x['bytes_per_conn']:.0f}" for x in row["rounds"]),
                      " / ".join(benchlib.fmt_ratio(row["ratio_accepted"].get(k)) for k in peers),
                      " / ".join(benchlib.fmt_ratio(row["ratio"].get(k)) for k in peers),
                      f"<= {goal['goal_bytes']} B" if goal else "", goal["verdict"] if goal else ""])
    say(f"\n  server Rss growth per idle connection, median of {cfg['rounds']} rounds ({n} connections each): "
        "accepted only, and after one byte echoed on each (the figure of the goals and of 'rounds'); ratios to "
        "libuv / libevent / Asio from the same rounds, for each of the two")
    say(table(["server", "accepted", "after echo", "rounds", "x peers, accepted", "x peers, after echo", "goal", ""],
              trows, "lrrrrrll"))
    return res
