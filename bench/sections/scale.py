"""Section 4: connection scale. keel-scale-server holds N idle connections,
each with [FrameCodec][Heartbeat][IdleReaper]; keel-scale-client, a separate
process (each side needs N descriptors), holds the other ends and answers
the PINGs with PongResponder.

Measured, all from /proc:
  memory   Rss and Pss of the server (smaps_rollup) before the clients
           connect and once all N are up and have had their first PING,
           delta / N. The kernel's share (socket, inode, file, dentry, epoll
           item) is not in any process's RSS: it is read from /proc/slabinfo
           (system-wide, so other work on the machine adds noise) and
           /proc/net/sockstat (TCP buffer pages).
  CPU      on-CPU time of every server thread (/proc/PID/task/*/schedstat,
           nanoseconds) over a window: first with the heartbeat at 1 s x 3
           (N PINGs a second, the stress case), then after switching every
           connection to the default heartbeat (30 s x 5 s x 3), when no PING
           falls due in the window: the idle loop itself.
  RTT      the Heartbeat handlers' own figures: the last PING-PONG round trip
           of every connection, as percentiles over the N connections.
"""

import json
import os
import resource
import select
import subprocess
import time

import benchlib
from benchlib import say, progress, table

NUMBER = 4
KEY = "scale"
TITLE = "connection scale: idle connections with Heartbeat + IdleReaper"

TARGET = 10_000
QUICK_TARGET = 1_000
FD_MARGIN = 64  # descriptors each process needs besides its connections
GOAL_BYTES = 2048
GOAL_CPU_PCT = 3.0
STRESS_HB = (1000, 1000, 3)  # keepalive ms, interval ms, probes
DEFAULT_HB = (30000, 5000, 3)  # HeartbeatOptions defaults
SLABS = ["TCP", "TCPv6", "sock_inode_cache", "filp", "dentry", "eventpoll_epi", "eventpoll_pwq"]


class Proc:
    """A child with a command pipe on stdin and JSON lines on stdout."""

    def __init__(self, argv):
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.buf = b""

    def line(self, timeout):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([self.p.stdout], [], [], left)
            if r:
                chunk = os.read(self.p.stdout.fileno(), 65536)
                if not chunk:
                    return None
                self.buf += chunk
        ln, self.buf = self.buf.split(b"\n", 1)
        return ln.decode(errors="replace")

    def ask(self, cmd, timeout=10.0):
        self.p.stdin.write((cmd + "\n").encode())
        self.p.stdin.flush()
        ln = self.line(timeout)
        return json.loads(ln) if ln and ln.startswith("{") else None

    def stderr_tail(self):
        try:
            r, _, _ = select.select([self.p.stderr], [], [], 0)
            return os.read(self.p.stderr.fileno(), 4096).decode(errors="replace").strip()[-300:] if r else ""
        except OSError:
            return ""

    def stop(self):
        if self.p.poll() is None:
            try:
                self.p.stdin.close()  # EOF: both binaries quit and exit 0
            except OSError:
                pass
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        return self.p.returncode


def cpu_ns(pid):
    """On-CPU nanoseconds of all threads of pid (schedstat), or None."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            total += int(open(f"/proc/{pid}/task/{tid}/schedstat").read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return total


def slab_info():
    """{cache: (active objects, object size)} for the caches a TCP socket uses."""
    out = {}
    try:
        for ln in open("/proc/slabinfo"):
            parts = ln.split()
            if parts and parts[0] in SLABS:
                out[parts[0]] = (int(parts[1]), int(parts[3]))
    except (OSError, ValueError, IndexError):
        return None
    return out


def kernel_per_socket(slabs):
    """Kernel bytes one idle epoll-watched TCP socket holds, by construction:
    one object in each cache (the sock, its inode, the file, the dentry, the
    epoll item and its wait-queue hook). Caches the kernel merged into others
    are missing from slabinfo and are left out. An idle socket holds no
    buffer memory: what arrived was read and what was sent was acknowledged."""
    if not slabs:
        return None
    per = {k: size for k, (_, size) in slabs.items() if k != "TCPv6"}
    return {"by_cache": per, "total": sum(per.values())}


def sockstat_tcp():
    try:
        for ln in open("/proc/net/sockstat"):
            if ln.startswith("TCP:"):
                f = ln.split()
                d = dict(zip(f[1::2], map(int, f[2::2])))
                return {"inuse": d.get("inuse"), "mem_pages": d.get("mem")}
    except OSError:
        pass
    return None


def cpu_window(server, client, seconds):
    s0, c0, t0 = cpu_ns(server), cpu_ns(client), time.monotonic()
    time.sleep(seconds)
    s1, c1, t1 = cpu_ns(server), cpu_ns(client), time.monotonic()
    wall = t1 - t0
    pct = lambda a, b: None if a is None or b is None else round((b - a) / (wall * 1e9) * 100, 3)  # noqa: E731
    return {"seconds": round(wall, 3), "server_cpu_pct": pct(s0, s1), "client_cpu_pct": pct(c0, c1),
            "server_cpu_ns": None if s0 is None or s1 is None else s1 - s0}


def kib(b):
    return "-" if b is None else f"{b / 1024:.2f} KiB"


def pct(v):
    return "-" if v is None else f"{v:.2f}%"


def run(quick, bindir):
    res = {"section": NUMBER, "quick": quick}
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = QUICK_TARGET if quick else TARGET
    n = max(1, min(want, soft - FD_MARGIN))
    why = None
    if quick:
        why = "QUICK mode"
    elif n < want:
        why = f"the open-file limit ({soft}) leaves room for {n} per process"
    res.update({"nofile_soft": soft, "nofile_hard": hard, "connections_target": want, "connections": n,
                "why_fewer": why})
    say(f"  open-file limit {soft} per process (hard {hard}); server and client are separate processes: "
        f"{n} connections" + (f" ({why})" if why else ""))
    server_bin, client_bin = bindir / "keel-scale-server", bindir / "keel-scale-client"
    missing = [b.name for b in (server_bin, client_bin) if not b.is_file()]
    if missing:
        res["status"] = "skipped: not built: " + ", ".join(missing)
        say("  " + res["status"])
        return res

    windows = (1.5, 1.0) if quick else (4.0, 3.0)
    steps = 6
    server = Proc([str(server_bin), "--port", "0", "--keepalive-ms", str(STRESS_HB[0]), "--interval-ms",
                   str(STRESS_HB[1]), "--probes", str(STRESS_HB[2]), "--idle-ms", "120000",
                   "--max-connections", str(n + 100)])
    client = None
    try:
        ln = server.line(10) or ""
        m = benchlib.LISTEN_RE.search(ln)
        if not m:
            res["status"] = "failed: server did not start: " + (ln or server.stderr_tail())
            say("  " + res["status"])
            return res
        port = int(m.group(2))
        time.sleep(0.2)
        mem0, slab0, sock0, fds0 = benchlib.smaps_rollup(server.p.pid), slab_info(), sockstat_tcp(), benchlib.fd_count(server.p.pid)
        progress(1, steps, f"server up on port {port}: Rss {mem0.get('rss_kb')} KiB, Pss {mem0.get('pss_kb')} KiB")

        t0 = time.monotonic()
        client = Proc([str(client_bin), "--port", str(port), "--connections", str(n), "--batch", "500"])
        ln = client.line(60)
        up = json.loads(ln) if ln and ln.startswith("{") else None
        if not up:
            res["status"] = "failed: client: " + (ln or client.stderr_tail() or "no report in 60 s")
            say("  " + res["status"])
            return res
        deadline = time.monotonic() + 10
        while benchlib.fd_count(server.p.pid) < fds0 + up["connected"] and time.monotonic() < deadline:
            time.sleep(0.05)
        res["connect"] = dict(up, wall_s=round(time.monotonic() - t0, 3))
        progress(2, steps, f"{up['connected']} connected, {up['failed']} failed, in {up['seconds']:.2f}s")
        # Every connection has sent its first PING and had the PONG by now
        # (keepalive 1 s, jitter 10 %): memory as a live connection uses it.
        time.sleep(STRESS_HB[0] / 1000 + 0.5)
        mem1, slab1, sock1 = benchlib.smaps_rollup(server.p.pid), slab_info(), sockstat_tcp()
        nc = max(1, up["connected"])
        memo = {"before": mem0, "after": mem1, "connections": up["connected"]}
        for k in ("rss_kb", "pss_kb"):
            if k in mem0 and k in mem1:
                memo[k.replace("_kb", "_bytes_per_conn")] = round((mem1[k] - mem0[k]) * 1024 / nc, 1)
        kps = kernel_per_socket(slab1)
        if kps:
            memo["kernel_bytes_per_socket"] = kps
        if slab0 and slab1:
            # System-wide: other processes opening and closing sockets meanwhile
            # show up here too, so this is a cross-check, not the figure.
            memo["slab_active_objects_delta"] = {k: slab1[k][0] - slab0.get(k, (0, 0))[0] for k in slab1}
        if sock0 and sock1:
            memo["sockstat_tcp_before"], memo["sockstat_tcp_after"] = sock0, sock1
        res["memory"] = memo
        progress(3, steps, f"server Rss +{kib(memo.get('rss_bytes_per_conn'))}/conn, "
                           f"Pss +{kib(memo.get('pss_bytes_per_conn'))}/conn; kernel "
                           f"{kib((memo.get('kernel_bytes_per_socket') or {}).get('total'))} per socket")

        st0 = server.ask("stats")
        w1 = cpu_window(server.p.pid, client.p.pid, windows[0])
        st1 = server.ask("stats")
        if st0 and st1:
            pings = st1["pings"] - st0["pings"]
            w1["pings"] = pings
            w1["pings_per_s"] = round(pings / w1["seconds"], 1)
            if pings > 0 and w1.get("server_cpu_ns") is not None:
                w1["server_us_per_ping"] = round(w1["server_cpu_ns"] / pings / 1000, 2)
        res["cpu_heartbeat_1s"] = w1
        res["rtt"] = st1
        progress(4, steps, f"heartbeat 1 s: server {pct(w1['server_cpu_pct'])} CPU, client "
                           f"{pct(w1['client_cpu_pct'])}, {w1.get('pings_per_s', 0):.0f} PING/s; RTT p50 "
                           f"{(st1 or {}).get('rtt_p50_us')} us")

        sw = server.ask("heartbeat %d %d %d" % DEFAULT_HB)
        time.sleep(0.5)
        w2 = cpu_window(server.p.pid, client.p.pid, windows[1])
        st2 = server.ask("stats")
        w2["heartbeat"] = {"keepalive_ms": DEFAULT_HB[0], "interval_ms": DEFAULT_HB[1], "probes": DEFAULT_HB[2],
                           "replaced": (sw or {}).get("replaced")}
        # The new handlers count from zero: PINGs sent since the switch (none are due for 27-30 s).
        w2["pings_since_switch"] = None if not st2 else st2["pings"]
        if w1.get("server_us_per_ping") is not None:
            # Steady state with the default heartbeat: one PING per connection
            # per keepalive period (traffic-free connections), at the cost per
            # PING measured above, on top of the idle loop.
            w2["projected_pct_default_heartbeat"] = round(
                nc / (DEFAULT_HB[0] / 1000) * w1["server_us_per_ping"] / 1e6 * 100 + (w2["server_cpu_pct"] or 0), 3)
        res["cpu_idle_loop"] = w2
        progress(5, steps, f"default heartbeat (30 s, none due): server {pct(w2['server_cpu_pct'])} CPU, "
                           f"client {pct(w2['client_cpu_pct'])}")
        cs = client.ask("stats")
        res["client_stats"] = cs
        res["server_stats_end"] = st2
        false_deaths = None if not cs else cs["closed"]
        res["false_deaths"] = false_deaths
        progress(6, steps, f"client: {(cs or {}).get('open')} open, {false_deaths} closed, "
                           f"{(cs or {}).get('pings_answered')} PINGs answered")
    finally:
        rc_c = client.stop() if client else None
        rc_s = server.stop()
    res["exit_status"] = {"server": rc_s, "client": rc_c}
    res["status"] = "ok"

    memo, w1, w2, rtt = res["memory"], res["cpu_heartbeat_1s"], res["cpu_idle_loop"], res.get("rtt") or {}
    verdict = lambda ok: "-" if ok is None else ("met" if ok else "MISSED")  # noqa: E731
    per_rss = memo.get("rss_bytes_per_conn")
    rows = [
        ["connections (all idle)", f"{res['connect']['connected']} of {n}" + (f" ({why})" if why else ""), "", ""],
        ["open-file limit per process", str(soft), "", ""],
        ["set-up time (client, batches of 500)", f"{res['connect']['seconds']:.2f} s", "", ""],
        ["server Rss per connection", kib(per_rss), "<= 2 KiB", verdict(None if per_rss is None
                                                                        else per_rss <= GOAL_BYTES)],
        ["server Pss per connection", kib(memo.get("pss_bytes_per_conn")), "", ""],
        ["kernel memory per socket (not in any RSS)", kib((memo.get("kernel_bytes_per_socket") or {}).get("total")),
         "", ""],
        ["server CPU, idle loop (default 30 s heartbeat)", pct(w2["server_cpu_pct"]), "< 3%",
         verdict(None if w2["server_cpu_pct"] is None else w2["server_cpu_pct"] < GOAL_CPU_PCT)],
        ["  projected with a PING per 30 s per connection", pct(w2.get("projected_pct_default_heartbeat")),
         "< 3%", verdict(None if w2.get("projected_pct_default_heartbeat") is None
                         else w2["projected_pct_default_heartbeat"] < GOAL_CPU_PCT)],
        [f"server CPU, heartbeat 1 s x 3 ({w1.get('pings_per_s', 0):.0f} PING/s)", pct(w1["server_cpu_pct"]),
         "(stress)", ""],
        ["  server CPU per PING/PONG", "-" if w1.get("server_us_per_ping") is None
         else f"{w1['server_us_per_ping']:.1f} us", "", ""],
        ["  client CPU (answers every PING)", pct(w1["client_cpu_pct"]), "", ""],
        ["heartbeat RTT p50 / p90 / p99 / max", " / ".join(f"{rtt[k]:.0f}" if rtt.get(k) is not None else "-" for k in
                                                            ("rtt_p50_us", "rtt_p90_us", "rtt_p99_us", "rtt_max_us"))
         + f" us (last RTT of {rtt.get('rtt_samples', 0)} conns)", "", ""],
        ["connections lost (false deaths)", str(res["false_deaths"]), "0", verdict(None if res["false_deaths"] is None
                                                                                 else res["false_deaths"] == 0)],
    ]
    say(f"\n  {'QUICK mode: ' if quick else ''}{res['connect']['connected']} idle connections, one server loop; "
        f"CPU over {windows[0]:.1f} s / {windows[1]:.1f} s windows; memory = (after - before) / N")
    say(table(["measure", "value", "goal", ""], rows, "llll"))
    kps = memo.get("kernel_bytes_per_socket")
    if kps:
        say("  kernel per socket, one object per slab cache (/proc/slabinfo sizes): "
            + " + ".join(f"{k} {v}" for k, v in kps["by_cache"].items())
            + f" = {kps['total']} B; a loopback connection has two sockets on this machine, a real one has one here")
    return res
