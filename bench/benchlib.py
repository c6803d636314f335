"""Shared pieces of the bench suite: terminal output, tables, the machine
description, server processes started on port 0, and running a client that
prints a JSON line. bench/run.py and every module in bench/sections/ use it.
Python standard library only."""

import json
import os
import platform
import re
import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
import signal

# ---- terminal ------------------------------------------------------------------

T0 = time.monotonic()


def say(msg=""):
    print(msg, flush=True)


def progress(done, total, msg):
    say(f"  [{done:>3}/{total}] {time.monotonic() - T0:6.1f}s  {msg}")


def fmt_us(v):
    if v is None:
        return "-"
    if v >= 1000:
        return f"{v / 1000:.2f}ms"
    return f"{v:.1f}"


def fmt_ratio(v):
    return "-" if v is None else f"{v:.2f}x"


def table(header, rows, align=None):
    """Plain text table; align is a string of 'l'/'r' per column."""
    cols = len(header)
    align = align or "l" + "r" * (cols - 1)
    width = [len(str(h)) for h in header]
    for r in rows:
        # A short row (a status instead of figures) lets its last cell run
        # across the columns it does not fill, without widening them.
        for i, c in enumerate(r[:cols] if len(r) >= cols else r[:-1]):
            width[i] = max(width[i], len(str(c)))

    def line(r):
        cells = []
        for i in range(min(cols, len(r))):
            c = str(r[i])
            if len(r) < cols and i == len(r) - 1:
                cells.append(c)
            else:
                cells.append(c.ljust(width[i]) if align[i] == "l" else c.rjust(width[i]))
        return "  " + "  ".join(cells).rstrip()

    out = [line(header), "  " + "  ".join("-" * w for w in width)]
    out += [line(r) for r in rows]
    return "\n".join(out)


# ---- machine ---------------------------------------------------------------------


def read_text(path):
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def smaps_rollup(pid):
    """Rss and Pss of a process in KiB ({"rss_kb": .., "pss_kb": ..}; empty when unreadable)."""
    out = {}
    try:
        for ln in open(f"/proc/{pid}/smaps_rollup"):
            parts = ln.split()
            if parts[0] in ("Rss:", "Pss:"):
                out[parts[0][:-1].lower() + "_kb"] = int(parts[1])
    except OSError:
        pass
    return out


def fd_count(pid):
    """Open descriptors of a process (-1 when unreadable)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


SYSCTLS = [
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_tw_reuse",
    "net.ipv4.ip_local_port_range",
    "net.core.somaxconn",
    "net.ipv4.tcp_max_syn_backlog",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
]


def machine_info(nofile_before, nofile_after):
    cpu = None
    cpuinfo = read_text("/proc/cpuinfo") or ""
    for ln in cpuinfo.splitlines():
        if ln.startswith("model name"):
            cpu = ln.split(":", 1)[1].strip()
            break
    sysctls = {}
    for name in SYSCTLS:
        v = read_text("/proc/sys/" + name.replace(".", "/"))
        sysctls[name] = " ".join(v.split()) if v is not None else None
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    return {
        "hostname": platform.node(),
        "kernel": platform.release(),
        "kernel_version": platform.version(),
        "arch": platform.machine(),
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "cores_usable": affinity,
        "memory_total_kb": next(
            (int(ln.split()[1]) for ln in (read_text("/proc/meminfo") or "").splitlines() if ln.startswith("MemTotal")),
            None,
        ),
        "sysctls": sysctls,
        "open_file_limit": {
            "soft_at_start": nofile_before[0],
            "hard": nofile_before[1],
            "soft_used": nofile_after[0],
        },
        "python": platform.python_version(),
    }


def loadavg():
    v = read_text("/proc/loadavg")
    return [float(x) for x in v.split()[:3]] if v else None


def git_info(repo):
    def run(*args):
        try:
            r = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10)
            return r.stdout.strip() if r.returncode == 0 else None
        except (OSError, subprocess.TimeoutExpired):
            return None

    status = run("status", "--porcelain")
    return {"commit": run("rev-parse", "HEAD"), "dirty_files": None if status is None else len(status.splitlines())}


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    before = (soft, hard)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
    return before, resource.getrlimit(resource.RLIMIT_NOFILE)


# ---- servers ---------------------------------------------------------------------

LISTEN_RE = re.compile(r"listening on (\S+?):(\d+)\b")


def terminate(proc, timeout=5):
    """SIGTERM, then SIGKILL if it has not exited within `timeout` s; reaps it."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Server:
    """One server binary, started as its own process on port 0."""

    def __init__(self, name, binary, args, label=None):
        self.name = name  # unique key in the results
        self.binary = binary
        self.args = args
        self.label = label or name
        self.proc = None
        self.port = None
        self.log = None
        self.status = "not started"
        self.error = None

    @property
    def built(self):
        return self.binary.is_file() and os.access(self.binary, os.X_OK)

    def skip(self, reason):
        """Never started: its rows say "skipped: reason"."""
        self.status = f"skipped: {reason}"

    def start(self, timeout=15.0):
        if self.status.startswith("skipped"):
            return False
        if not self.built:
            self.status, self.error = "not built", f"{self.binary} not found"
            return False
        self.log = tempfile.NamedTemporaryFile(prefix="keel-bench-" + re.sub(r"[^\w.-]", "_", self.name) + "-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [str(self.binary), "--port", "0", *self.args],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_text()
            m = LISTEN_RE.search(text)
            if m:
                self.port = int(m.group(2))
                self.status = "ok"
                return True
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        rc = self.proc.poll()
        self.status = "failed"
        self.error = (
            f"exited with status {rc} before listening" if rc is not None else f"no 'listening on' line in {timeout:.0f}s"
        )
        tail = self.log_text().strip().splitlines()[-3:]
        if tail:
            self.error += ": " + " | ".join(tail)
        self.stop()
        return False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None and self.status == "ok"

    def mark_dead(self):
        if self.status == "ok":
            rc = self.proc.poll() if self.proc else None
            self.status = "failed"
            self.error = f"server exited during the run (status {rc})"
            tail = self.log_text().strip().splitlines()[-3:]
            if tail:
                self.error += ": " + " | ".join(tail)

    def log_text(self):
        try:
            return Path(self.log.name).read_text(errors="replace")
        except (OSError, AttributeError):
            return ""

    def stop(self):
        terminate(self.proc)
        self.proc = None
        if self.log is not None:
            self.log.close()
            try:
                os.unlink(self.log.name)
            except OSError:
                pass
            self.log = None

    def describe(self):
        d = {"binary": rel(self.binary), "args": ["--port", "0", *self.args], "status": self.status}
        if self.error:
            d["error"] = self.error
        return d


class ServerSet:
    """Starts a section's servers together, stops them all on exit."""

    def __init__(self, servers):
        self.servers = servers

    def __enter__(self):
        for s in self.servers:
            ok = s.start()
            state = f"port {s.port}" if ok else s.status + (f" ({s.error})" if s.error and s.status != "not built" else "")
            say(f"  {s.label:<22} {state}")
        return self

    def __exit__(self, *exc):
        for s in self.servers:
            s.stop()
        return False

    def running(self):
        return [s for s in self.servers if s.status == "ok"]


# ---- the io_uring rows (issue 16) --------------------------------------------------

FLOOR_URING = "floor-uring-echo"
KEEL_URING = "keel-echo-uring"
_backend_flag = {}


def has_backend_flag(binary):
    """True when `binary --help` lists --backend (keel's io_uring loop backend)."""
    key = str(binary)
    if key not in _backend_flag:
        try:
            r = subprocess.run([key, "--help"], capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
            _backend_flag[key] = "--backend" in r.stdout + r.stderr
        except (OSError, subprocess.TimeoutExpired):
            _backend_flag[key] = False
    return _backend_flag[key]


def uring_floor(bindir):
    """floor-uring-echo, the io_uring floor; skipped when the build had no liburing."""
    s = Server(FLOOR_URING, Path(bindir) / "floor-uring-echo", [], "floor-uring-echo (io_uring)")
    if not s.built:
        s.skip("floor-uring-echo not built (no liburing when the build was configured)")
    return s


def keel_uring(bindir, args=("--threads", "0"), label="keel-echo --backend io_uring (1 loop)"):
    """keel-echo on its io_uring backend; skipped when this keel-echo has no --backend flag."""
    binary = Path(bindir) / "keel-echo"
    s = Server(KEEL_URING, binary, [*args, "--backend", "io_uring"], label)
    if s.built and not has_backend_flag(binary):
        s.skip("keel-echo has no --backend")
    return s


def rotated(items, r):
    if not items:
        return items
    k = r % len(items)
    return items[k:] + items[:k]


def run_json(cmd, timeout):
    """Runs a client; returns (dict, None) from its last JSON line, or (None, error)."""
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f}s"
    except OSError as e:
        return None, str(e)
    if r.returncode != 0:
        msg = (r.stderr or r.stdout).strip().splitlines()
        return None, f"exit {r.returncode}: " + (msg[-1] if msg else "no output")
    for ln in reversed(r.stdout.strip().splitlines()):
        ln = ln.strip()
        if ln.startswith("{"):
            try:
                return json.loads(ln), None
            except json.JSONDecodeError:
                break
    return None, "no JSON line in the output"


def median_of(rounds, key):
    vals = [r[key] for r in rounds if isinstance(r.get(key), (int, float))]
    return statistics.median(vals) if vals else None


def ratio(a, b):
    return round(a / b, 4) if a is not None and b not in (None, 0) else None


REPO = Path(__file__).resolve().parent.parent


def rel(path):
    """A path inside the repository relative to its root (latest.json is committed)."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)




# ---- plots ---------------------------------------------------------------------


def gp_str(s):
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def run_gnuplot(script, gp_path):
    gp_path.write_text("\n".join(script) + "\n")
    try:
        r = subprocess.run(["gnuplot", str(gp_path)], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        say(f"  gnuplot failed: {e}")
        return False
    if r.returncode != 0:
        say(f"  gnuplot failed ({gp_path.name}): {r.stderr.strip()[-400:]}")
        return False
    return True


# ---- TIME_WAIT and other socket states, per side of one server port --------------

TCP_STATES = {1: "established", 2: "syn_sent", 3: "syn_recv", 4: "fin_wait1", 5: "fin_wait2", 6: "time_wait",
              7: "close", 8: "close_wait", 9: "last_ack", 10: "listen", 11: "closing"}


def socket_states(port):
    """Sockets on this host whose local (server side) or remote (client side)
    port is `port`, counted by state, from /proc/net/tcp{,6} (what `ss -tan`
    shows). A bench server listens on a port of its own, so these are its
    connections and nobody else's."""
    server, client = {}, {}
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(path).read_text().splitlines()[1:]
        except OSError:
            continue
        for ln in lines:
            f = ln.split(None, 4)
            if len(f) < 4:
                continue
            local, remote, st = int(f[1].rsplit(":", 1)[1], 16), int(f[2].rsplit(":", 1)[1], 16), int(f[3], 16)
            name = TCP_STATES.get(st, str(st))
            if local == port:
                server[name] = server.get(name, 0) + 1
            elif remote == port:
                client[name] = client.get(name, 0) + 1
    return {"server": server, "client": client}


def settled_states(port, timeout=3.0):
    """socket_states(port) once no connection of the port is still closing
    (FIN_WAIT, LAST_ACK, ...): after a client exits, its last closes take a
    moment to reach TIME_WAIT. Returns what it saw at the deadline otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        st = socket_states(port)
        busy = sum(n for side in st.values() for k, n in side.items() if k not in ("time_wait", "listen"))
        if busy == 0 or time.monotonic() >= deadline:
            st["settled"] = busy == 0
            return st
        time.sleep(0.02)
