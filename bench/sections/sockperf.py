"""Section 7: sockperf ping-pong, keel-sockperf against `sockperf server`.

The stock sockperf client (Debian 12, sockperf 3.7) measures the servers in
the same run: `sockperf ping-pong -m 64` over TCP and over UDP, one message in
flight, against
  keel-sockperf            one process, TCP and UDP on one port, epoll loop;
  sockperf server          sockperf's default, one process per protocol, a
                           blocking recvfrom per socket: 2 syscalls a message
                           (recvfrom, sendto) where any event loop pays 3
                           (epoll_wait, read, send), about 0.6 us here;
  sockperf server -F epoll (full mode only) one process serving both
                           protocols from a feed file through epoll: the same
                           shape as keel-sockperf.
Each round runs every (protocol, server) pair once, in an order that rotates
from round to round; figures are medians over rounds of the p50 and p99
sockperf prints. sockperf reports latency as half the round
trip, in microseconds, and its percentiles cover its "valid duration" (the
run minus a 400 ms warm-up at the start and the tail at the end).

Pacing: every sockperf client sleeps about 2.1 s after connecting before it
sends anything (hard-wired in 3.7; --dontwarmup does not remove it, and its
multi-server mode (-f file --srv-num) stalls after one message). Running the
clients back to back would spend most of the budget asleep, so the runs are
started `-t` + a margin apart: while one client measures, the next one is
still in its sleep, and the measuring windows never overlap (a client's
first 400 ms are not counted anyway, which covers the previous one printing
its statistics).

Goal reported against: keel-sockperf p50 within 5% of `sockperf server`
(ratio keel/sockperf <= 1.05), per protocol; the ratio to the epoll variant
is printed next to it.
"""

import re
import shutil
import socket
import subprocess
import tempfile
import time

import benchlib
from benchlib import say, progress, table

NUMBER = 7
KEY = "sockperf"
TITLE = "sockperf ping-pong: keel-sockperf vs sockperf server"

SIZE = 64
GOAL = 1.05
# spacing: a client sends from about 2.05 s after its start, measures from
# 2.45 s (after sockperf's 400 ms warm-up) to 2.05 + seconds, then prints;
# the next client starts `spacing` later, so with seconds = 1 any spacing
# above 1.0 keeps the measured windows apart.
FULL = {"rounds": 4, "seconds": 1, "spacing": 1.15, "epoll_peer": True}
QUICK = {"rounds": 1, "seconds": 1, "spacing": 1.1, "epoll_peer": False}
PROTOS = ["tcp", "udp"]
SERVERS = [("keel", "keel-sockperf"), ("sockperf", "sockperf server"), ("epoll", "sockperf server -F epoll")]

PCT_RE = re.compile(r"percentile (\d+\.\d+) =\s*([\d.]+)")
VALID_RE = re.compile(r"\[Valid Duration\].*SentMessages=(\d+); ReceivedMessages=(\d+)")
DROP_RE = re.compile(r"# dropped messages = (\d+); # duplicated messages = (\d+); # out-of-order messages = (\d+)")


def parse(out):
    """The figures of one sockperf client run, or None with the reason."""
    pct = {float(a): float(b) for a, b in PCT_RE.findall(out)}
    m = VALID_RE.search(out)
    d = DROP_RE.search(out)
    if not m or 50.0 not in pct or 99.0 not in pct:
        tail = " | ".join(out.strip().splitlines()[-2:])
        return None, f"no summary in sockperf's output: {tail[:200]}"
    r = {"p50_us": pct[50.0], "p99_us": pct[99.0], "p999_us": pct.get(99.9),
         "sent": int(m.group(1)), "received": int(m.group(2))}
    if d:
        r["dropped"], r["duplicated"], r["out_of_order"] = map(int, d.groups())
    if r["received"] < r["sent"] or r.get("dropped"):
        r["warning"] = f"{r['sent'] - r['received']} lost, {r.get('dropped', 0)} dropped"
    return r, None


def free_port():
    """A port free for both TCP and UDP on 127.0.0.1 (sockperf server needs a number)."""
    for _ in range(20):
        t = socket.socket()
        t.bind(("127.0.0.1", 0))
        port = t.getsockname()[1]
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            u.close()
            t.close()
    raise RuntimeError("no port free for both TCP and UDP")


class SockperfServer:
    """`sockperf server` for one protocol (proto "tcp"/"udp"), or for both
    through epoll (proto "epoll", a feed file naming T: and U: on one port).
    It prints no port line, so it is given a free port and judged ready once
    it reports blocking on its sockets."""

    def __init__(self, proto, port):
        self.proto, self.port = proto, port
        self.log = tempfile.NamedTemporaryFile(prefix=f"keel-bench-sockperf-sr-{proto}-", suffix=".log")
        if proto == "epoll":
            self.feed = tempfile.NamedTemporaryFile("w", prefix="keel-bench-sockperf-feed-", suffix=".txt")
            self.feed.write(f"T:127.0.0.1:{port}\nU:127.0.0.1:{port}\n")
            self.feed.flush()
            cmd = ["sockperf", "server", "-f", self.feed.name, "-F", "epoll"]
        else:
            cmd = ["sockperf", "server", "-i", "127.0.0.1", "-p", str(port)] + (["--tcp"] if proto == "tcp" else [])
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        self.error = None
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            text = open(self.log.name, errors="replace").read()
            if "to block on socket" in text:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.error = f"sockperf server ({proto}) did not come up: " + " | ".join(
            open(self.log.name, errors="replace").read().strip().splitlines()[-2:])

    def alive(self):
        return self.error is None and self.proc.poll() is None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def peer_error(peers, proto, server):
    peer = peers.get("epoll" if server == "epoll" else proto)
    return (peer.error if peer else None) or "sockperf server exited"


def run(quick, bindir):
    cfg = QUICK if quick else FULL
    data = {"section": NUMBER, "message_bytes": SIZE, "rounds": cfg["rounds"], "client_seconds": cfg["seconds"],
            "unit": "microseconds, half round trip (sockperf's latency)", "goal": f"keel p50 <= {GOAL:.2f}x sockperf server",
            "results": {}}
    if shutil.which("sockperf") is None:
        data["status"] = "skipped: sockperf not installed (scripts/install-deps.sh)"
        say("  " + data["status"])
        return data

    keel = benchlib.Server("keel-sockperf", bindir / "keel-sockperf", [], label="keel-sockperf")
    with benchlib.ServerSet([keel]):
        if keel.status != "ok":
            data["status"] = f"skipped: keel-sockperf {keel.status}" + (f" ({keel.error})" if keel.error else "")
            return data
        port = free_port()
        peers = {p: SockperfServer(p, port) for p in PROTOS}
        if cfg["epoll_peer"]:
            peers["epoll"] = SockperfServer("epoll", free_port())
        try:
            for p, s in peers.items():
                say(f"  {'sockperf server ' + p:<22} " + (f"port {s.port}" if s.error is None else s.error))
            ports = {("keel", p): keel.port for p in PROTOS}
            ports.update({("sockperf", p): port for p in PROTOS})
            servers = [x for x in SERVERS if x[0] != "epoll" or cfg["epoll_peer"]]
            ports.update({("epoll", p): peers["epoll"].port for p in PROTOS if cfg["epoll_peer"]})
            jobs = []  # (round, proto, server)
            pairs = [(p, s) for p in PROTOS for s, _ in servers]
            for r in range(cfg["rounds"]):
                jobs += [(r, p, s) for p, s in benchlib.rotated(pairs, r)]
            # Staggered starts (see the module comment): job i starts i * spacing after the first.
            rounds = {(p, s): [] for p in PROTOS for s, _ in servers}
            errors = {}
            running = []  # (round, proto, server, (process, output file) or None), in start order
            reaped = 0

            def reap(block):
                # Collects finished clients in start order (they finish in that order).
                nonlocal reaped
                while reaped < len(running):
                    r, p, s, job = running[reaped]
                    if job is not None:
                        proc, out = job
                        if not block and proc.poll() is None:
                            return
                        try:
                            proc.wait(timeout=cfg["seconds"] + 20)
                        except subprocess.TimeoutExpired:
                            proc.kill()
                            proc.wait()
                        out.seek(0)
                        fig, err = parse(out.read())
                        out.close()
                    else:
                        fig, err = None, peer_error(peers, p, s)
                    if fig is None:
                        errors[(p, s)] = err
                    else:
                        rounds[(p, s)].append(fig)
                    reaped += 1
                    progress(reaped, len(jobs), f"round {r + 1} {p} {s:<8} " +
                             (f"p50 {fig['p50_us']:.2f} p99 {fig['p99_us']:.2f} us" if fig else f"error: {err}"))

            t0 = time.monotonic()
            for i, (r, p, s) in enumerate(jobs):
                peer = peers.get("epoll" if s == "epoll" else p)
                if s != "keel" and not peer.alive():
                    running.append((r, p, s, None))
                    continue
                while True:  # wait for this client's start time, reporting the finished ones meanwhile
                    reap(False)
                    delay = t0 + i * cfg["spacing"] - time.monotonic()
                    if delay <= 0:
                        break
                    time.sleep(min(delay, 0.05))
                cmd = ["sockperf", "ping-pong", "-i", "127.0.0.1", "-p", str(ports[(s, p)]), "-m", str(SIZE),
                       "-t", str(cfg["seconds"])] + (["--tcp"] if p == "tcp" else [])
                out = tempfile.TemporaryFile(mode="w+")
                running.append((r, p, s, (subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                                           stderr=subprocess.STDOUT), out)))
            reap(True)
            if not keel.alive():
                keel.mark_dead()
        finally:
            for s in peers.values():
                s.stop()

    rows = []
    res = data["results"]
    for p in PROTOS:
        res[p] = {}
        for s, label in servers:
            rs = rounds[(p, s)]
            entry = {"rounds": rs}
            if rs:
                entry.update({k: benchlib.median_of(rs, k) for k in ("p50_us", "p99_us", "p999_us")})
                entry["observations"] = sum(x["received"] for x in rs)
                warns = [x["warning"] for x in rs if "warning" in x]
                if warns:
                    entry["warnings"] = warns
            if (p, s) in errors:
                entry["error"] = errors[(p, s)]
            res[p][s] = entry
        k = res[p]["keel"]
        for s, _ in servers[1:]:  # keel / each peer
            res[p][f"ratio_p50_vs_{s}"] = benchlib.ratio(k.get("p50_us"), res[p][s].get("p50_us"))
            res[p][f"ratio_p99_vs_{s}"] = benchlib.ratio(k.get("p99_us"), res[p][s].get("p99_us"))
        rp = res[p]["ratio_p50_vs_sockperf"]
        res[p]["goal_met"] = None if rp is None else rp <= GOAL
        for s, label in servers:
            e = res[p][s]
            if "p50_us" not in e:
                rows.append([p.upper(), label, f"no figures: {e.get('error', 'not run')}"])
                continue
            # keel's row carries nothing to compare; a peer's row carries keel / that peer.
            r50 = res[p].get(f"ratio_p50_vs_{s}")
            r99 = res[p].get(f"ratio_p99_vs_{s}")
            rows.append([p.upper(), label, f"{e['p50_us']:.2f}", f"{e['p99_us']:.2f}",
                         benchlib.fmt_us(e.get("p999_us")), str(e["observations"]),
                         "" if s == "keel" else benchlib.fmt_ratio(r50), "" if s == "keel" else benchlib.fmt_ratio(r99)])
    say(table(["proto", "server", "p50 us", "p99 us", "p99.9 us", "observations", "keel/this p50", "keel/this p99"],
              rows, "llrrrrrr"))
    for p in PROTOS:
        rp = res[p]["ratio_p50_vs_sockperf"]
        if rp is not None:
            verdict = "met" if rp <= GOAL else "NOT met"
            extra = res[p].get("ratio_p50_vs_epoll")
            say(f"  goal {p.upper()}: keel-sockperf p50 within 5% of sockperf server: {verdict} ({rp:.3f}x"
                + (f"; {extra:.3f}x of sockperf server -F epoll)" if extra is not None else ")"))
    data["servers"] = {"keel-sockperf": keel.describe(),
                       "sockperf": {"command": "sockperf server -i 127.0.0.1 -p PORT [--tcp]"},
                       "epoll": {"command": "sockperf server -f FEED -F epoll (FEED: T: and U: on one port)"}}
    return data


def plot(data, png, workdir):
    """p50 and p99 per server, one panel per protocol (log scale: tails are
    orders of magnitude above the medians on a shared VM)."""
    res = data.get("results") or {}
    names = [(s, label) for s, label in SERVERS if any("p50_us" in res.get(p, {}).get(s, {}) for p in PROTOS)]
    if not names:
        return False
    dat = workdir / "sockperf.dat"
    with open(dat, "w") as f:
        for p in PROTOS:
            for i, (s, label) in enumerate(names):
                e = res.get(p, {}).get(s, {})
                f.write(f'{i} "{label}" {e.get("p50_us", "NaN")} {e.get("p99_us", "NaN")}\n')
            f.write("\n\n")
    q = lambda t: "'" + str(t).replace("'", "''") + "'"  # noqa: E731  (gnuplot single-quoted string)
    script = [
        "set terminal pngcairo size 960,380 font 'sans,9' noenhanced",
        f"set output {q(png)}",
        "set datafile missing 'NaN'",
        "set style fill solid 0.6 border -1",
        "set boxwidth 0.35",
        "set logscale y",
        "set grid ytics",
        "set ylabel 'latency, half round trip (us)'",
        f"set xrange [-0.6:{len(names) - 0.4}]",
        "set key top left",
        "set multiplot layout 1,2 title " + q(f"sockperf ping-pong, {data.get('message_bytes')} B: medians over "
                                            f"{data.get('rounds')} rounds"),
    ]
    for bi, p in enumerate(PROTOS):
        script.append(f"set title {q(p.upper())}")
        script.append(f"plot {q(dat)} index {bi} using ($1-0.18):3:xtic(2) with boxes title 'p50', "
                      f"'' index {bi} using ($1+0.18):4 with boxes title 'p99'")
    script.append("unset multiplot")
    gp = workdir / "sockperf.gp"
    gp.write_text("\n".join(script) + "\n")
    r = subprocess.run(["gnuplot", str(gp)], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        say(f"  sockperf plot: gnuplot failed: {r.stderr.strip()[-300:]}")
        return False
    return True
