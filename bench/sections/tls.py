"""Section 11: TLS. keel-http over HTTPS against nginx, keel-resp over TLS
against redis-server, in one run, rounds interleaved, medians over rounds.

  https       wrk -t1 -c50 --latency https://: req/s, p50, p99. keel-http
              (one loop) against nginx (1 worker, TLS 1.3 only, keep-alive,
              `return 200 "hello\\n"`, the same certificate).
  handshakes  wrk with -H "Connection: close": every request a new
              connection. wrk RESUMES: it reuses its SSL object (SSL_clear
              keeps the session), so these are TLS 1.3 PSK handshakes with
              no certificate signature (nginx's $ssl_session_reused said
              "r" for all but the first per connection).
  full_hs     `openssl s_time -new`: full handshakes, a new session each,
              no request, ECDSA P-256 and RSA-2048 certificates. One
              sequential client: its rate is bounded by the client, so
              the server's CPU per handshake (rps_per_cpu_s: handshakes per
              server CPU-second, i.e. per saturated loop) is the figure.
  resp        redis-benchmark --tls -t ping,set,get -c 50 against keel-resp
              and `redis-server --tls-port` (tls-auth-clients no).
  idle memory N TLS connections, each through its handshake and one request
              (the reply read), then left idle; the server's RSS growth
              (for nginx: its worker's) divided by N. 5,000 connections in
              full mode, 1,000 in QUICK (5,000 takes ~10 s per server).

Certificates (a CA, an EC and an RSA server certificate for 127.0.0.1) are
made here with the openssl command into a temporary directory, removed at
the end; nginx and redis-server get generated configurations there too.
Goals (docs/tls.md): keel >= nginx for HTTPS req/s and handshakes/s,
keel-resp >= redis-server, idle memory per connection <= nginx's.
"""

import csv
import io
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import benchlib
from benchlib import say, progress, table, fmt_ratio

NUMBER = 11
KEY = "tls"
TITLE = "TLS: keel-http vs nginx (HTTPS, handshakes/s, idle memory), keel-resp vs redis-server --tls-port"

FULL = {"rounds": 3, "seconds": 3, "resp_n": 50000, "idle_conns": 5000, "idle_rounds": 2}
QUICK = {"rounds": 1, "seconds": 1, "resp_n": 5000, "idle_conns": 1000, "idle_rounds": 1}
CLOSE_CONNS = 16


def sh(cmd):
    subprocess.run(cmd, shell=True, check=True, capture_output=True, timeout=60)


def make_pki(d):
    san = d / "san.ext"
    san.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    sh(f"openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {d}/ca.key -out {d}/ca.pem "
       f"-days 2 -subj /CN=keel-bench-ca")
    for name, alg in (("ec", "ec -pkeyopt ec_paramgen_curve:P-256"), ("rsa", "rsa:2048")):
        sh(f"openssl req -newkey {alg} -nodes -keyout {d}/{name}.key -out {d}/{name}.csr -subj /CN=localhost")
        sh(f"openssl x509 -req -in {d}/{name}.csr -CA {d}/ca.pem -CAkey {d}/ca.key -CAcreateserial "
           f"-out {d}/{name}.pem -days 2 -extfile {san}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class External:
    """nginx or redis-server from a generated config; benchlib.Server's surface."""

    def __init__(self, name, argv, port, ready):
        self.name = self.label = name
        self.argv, self.port, self.ready = argv, port, ready
        self.proc, self.status, self.error = None, "not started", None

    def start(self, timeout=10.0):
        if shutil.which(self.argv[0]) is None:
            self.status, self.error = "not installed", f"{self.argv[0]} not on PATH (scripts/install-deps.sh)"
            return False
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if self.ready(self.port):
                self.status = "ok"
                return True
            time.sleep(0.05)
        err = b""
        if self.proc.poll() is not None:
            err = self.proc.stderr.read()
        self.status, self.error = "failed", f"not ready (exit {self.proc.poll()}): {err.decode()[-200:]}"
        self.stop()
        return False

    def pids(self):
        """The processes serving connections: nginx's worker(s), else the process."""
        if self.proc is None:
            return []
        try:
            kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        except OSError:
            kids = []
        return [int(k) for k in kids] or [self.proc.pid]

    def stop(self):
        benchlib.terminate(self.proc)
        self.proc = None


def tls_ready(ca):
    def ready(port):
        try:
            ctx = ssl.create_default_context(cafile=ca)
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s, ctx.wrap_socket(s, server_hostname="127.0.0.1"):
                return True
        except OSError:
            return False
    return ready


def nginx(d, cert, key, ca):
    port = free_port()
    root = d / f"nginx-{cert.stem}"
    root.mkdir(exist_ok=True)
    conf = root / "nginx.conf"
    # One worker, like keel-http's one loop; no access log (keel-http writes none).
    conf.write_text(f"""daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 20000;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 12000; }}
http {{
  access_log off;
  client_body_temp_path {root}/body; proxy_temp_path {root}/proxy; fastcgi_temp_path {root}/fcgi;
  uwsgi_temp_path {root}/uwsgi; scgi_temp_path {root}/scgi;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.3;
    default_type text/plain;
    location / {{ return 200 "hello\\n"; }}
  }}
}}
""")
    return External(f"nginx ({cert.stem})", ["nginx", "-p", str(root), "-c", str(conf)], port, tls_ready(ca))


def redis_tls(d, ca):
    port = free_port()
    conf = d / "redis.conf"
    conf.write_text(f"port 0\ntls-port {port}\nbind 127.0.0.1\ntls-cert-file {d}/ec.pem\ntls-key-file {d}/ec.key\n"
                    f"tls-ca-cert-file {ca}\ntls-auth-clients no\nsave \"\"\nappendonly no\nprotected-mode no\n"
                    f"daemonize no\nmaxclients 10000\n")
    return External("redis-server --tls-port", ["redis-server", str(conf)], port, tls_ready(ca))


def keel(bindir, name, args, ca, label):
    s = benchlib.Server(label, bindir / name, args, label=label)
    s.pids = lambda: [s.proc.pid] if s.proc else []
    return s


def wrk(port, seconds, close):
    cmd = ["wrk", "-t1", f"-c{CLOSE_CONNS if close else 50}", f"-d{seconds}s", "--latency"]
    if close:
        cmd += ["-H", "Connection: close"]
    try:
        p = subprocess.run(cmd + [f"https://127.0.0.1:{port}/"], capture_output=True, text=True,
                           timeout=seconds + 30, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None, "wrk timed out"
    return benchlib_wrk_parse(p.stdout + p.stderr) if p.returncode == 0 else (None, f"wrk exit {p.returncode}")


def benchlib_wrk_parse(out):
    import re
    unit = {"us": 1.0, "ms": 1000.0, "s": 1e6}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    pct = {p: float(v) * unit[u] for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
    if not m or "50" not in pct:
        return None, "no summary in wrk's output: " + " | ".join(out.strip().splitlines()[-2:])[:200]
    e = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    n = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": float(m.group(1)), "p50_us": pct["50"], "p99_us": pct.get("99"),
            "socket_errors": sum(map(int, e.groups())) if e else 0, "non_2xx": int(n.group(1)) if n else 0}, None


def s_time(port, seconds):
    t0 = time.monotonic()
    try:
        p = subprocess.run(["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new", "-time", str(seconds)],
                           capture_output=True, text=True, timeout=seconds + 30, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None, "s_time timed out"
    import re
    m = re.search(r"(\d+) connections in [\d.]+ real seconds", p.stdout)
    if not m:
        return None, f"s_time exit {p.returncode}: {(p.stdout + p.stderr).strip()[-200:]}"
    return {"rps": int(m.group(1)) / (time.monotonic() - t0), "connections": int(m.group(1))}, None


def redis_bench(port, ca, n):
    cmd = ["redis-benchmark", "--tls", "--cacert", ca, "-p", str(port), "-t", "ping,set,get", "-n", str(n),
           "-c", "50", "--csv"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None, "redis-benchmark timed out"
    if r.returncode != 0:
        return None, f"redis-benchmark exit {r.returncode}: {(r.stderr or r.stdout).strip()[-200:]}"
    out = {}
    for row in csv.DictReader(io.StringIO(r.stdout)):
        out[row["test"].lower() + "_rps"] = float(row["rps"])
    return (out, None) if out else (None, "no CSV rows")


def cpu_s(pids):
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in pids:
        try:
            f = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / tick


def rss_kib(pids):
    return sum(benchlib_status_kib(p) for p in pids)


def benchlib_status_kib(pid):
    try:
        for ln in Path(f"/proc/{pid}/status").read_text().splitlines():
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1])
    except OSError:
        pass
    return 0


def idle_memory(srv, ca, n):
    """RSS growth per connection after n handshakes plus one request each."""
    ctx = ssl.create_default_context(cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    before = rss_kib(srv.pids())

    def one(_):
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", srv.port), timeout=10), server_hostname="127.0.0.1")
        s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        got = b""
        while not got.endswith(b"hello\n"):
            chunk = s.recv(4096)
            if not chunk:
                raise OSError("closed before the reply")
            got += chunk
        return s

    with ThreadPoolExecutor(max_workers=4) as pool:
        socks = list(pool.map(one, range(n)))
    try:
        # The server has answered every request: what it holds now is per idle connection.
        after = rss_kib(srv.pids())
    finally:
        for s in socks:
            s.close()
    return {"rss_before_kib": before, "rss_after_kib": after, "connections": n,
            "bytes_per_conn": round((after - before) * 1024 / n)}, None


def run(quick, bindir):
    cfg = QUICK if quick else FULL
    data = {"section": NUMBER, "mode": "quick" if quick else "full", "config": cfg, "results": {}}
    missing = [t for t in ("openssl", "wrk", "nginx", "redis-server", "redis-benchmark") if shutil.which(t) is None]
    if missing:
        data["status"] = f"skipped: {', '.join(missing)} not installed (scripts/install-deps.sh)"
        say("  " + data["status"])
        return data
    tmp = Path(tempfile.mkdtemp(prefix="keel-bench-tls-"))
    try:
        make_pki(tmp)
        ca = str(tmp / "ca.pem")
        certs = {k: (tmp / f"{k}.pem", tmp / f"{k}.key") for k in ("ec", "rsa")}
        http = {}
        for k, (c, key) in certs.items():
            http[f"keel_{k}"] = keel(bindir, "keel-http", ["--tls-cert", str(c), "--tls-key", str(key)], ca,
                                     f"keel-http ({k})")
            http[f"nginx_{k}"] = nginx(tmp, c, key, ca)
        resp = {"keel_resp": keel(bindir, "keel-resp", ["--tls-cert", str(certs["ec"][0]), "--tls-key",
                                                        str(certs["ec"][1])], ca, "keel-resp --tls"),
                "redis": redis_tls(tmp, ca)}
        servers = {**http, **resp}
        with benchlib.ServerSet(list(servers.values())):
            jobs = []
            for r in range(cfg["rounds"]):
                jobs += [(r, "https", k) for k in benchlib.rotated(["keel_ec", "nginx_ec"], r)]
                jobs += [(r, "handshakes", k) for k in benchlib.rotated(list(http), r)]
                jobs += [(r, "full_hs", k) for k in benchlib.rotated(list(http), r)]
                jobs += [(r, "resp", k) for k in benchlib.rotated(list(resp), r)]
            for r in range(cfg["idle_rounds"]):
                jobs += [(r, "idle", k) for k in benchlib.rotated(["keel_ec", "nginx_ec"], r)]
            rounds = {}
            for n, (r, test, k) in enumerate(jobs, 1):
                srv = servers[k]
                if srv.status != "ok":
                    fig, err = None, f"{srv.status}: {srv.error}"
                elif test in ("https", "handshakes", "resp", "full_hs"):
                    cpu0 = cpu_s(srv.pids())
                    t0 = time.monotonic()
                    if test == "resp":
                        fig, err = redis_bench(srv.port, ca, cfg["resp_n"])
                    elif test == "full_hs":
                        fig, err = s_time(srv.port, cfg["seconds"])
                    else:
                        fig, err = wrk(srv.port, cfg["seconds"], close=test == "handshakes")
                    if fig:
                        # The server's CPU share: wrk shares the 2 cores, so req/s
                        # can be the client's limit; requests per server CPU-second
                        # is what one loop would do saturated.
                        used = cpu_s(srv.pids()) - cpu0
                        fig["server_cpu_pct"] = round(100 * used / (time.monotonic() - t0), 1)
                        if "rps" in fig and used > 0:
                            fig["rps_per_cpu_s"] = round(fig["rps"] * (time.monotonic() - t0) / used)
                else:
                    # A fresh server, so earlier tests' heap does not hide or add to the growth.
                    srv.stop()
                    if not srv.start():
                        fig, err = None, f"restart failed: {srv.error}"
                    else:
                        fig, err = idle_memory(srv, ca, cfg["idle_conns"])
                rounds.setdefault((test, k), []).append(fig if fig else {"error": err})
                progress(n, len(jobs), f"round {r + 1} {test:<10} {srv.label:<24} " +
                         (", ".join(f"{a} {b:.0f}" for a, b in fig.items() if isinstance(b, float | int)) if fig
                          else f"error: {err}"))
        res = data["results"]
        for (test, k), rs in rounds.items():
            ok = [x for x in rs if "error" not in x]
            entry = {"server": servers[k].label, "rounds": rs}
            for f in sorted({f for x in ok for f in x if isinstance(x[f], (int, float))}):
                entry[f] = benchlib.median_of(ok, f)
            res.setdefault(test, {})[k] = entry
        rows = []

        def row(test, fig, keel_k, other_k, better="higher"):
            a = res.get(test, {}).get(keel_k, {}).get(fig)
            b = res.get(test, {}).get(other_k, {}).get(fig)
            rat = benchlib.ratio(a, b)
            goal = None if rat is None else (rat >= 1 if better == "higher" else rat <= 1)
            rows.append([test, fig, keel_k, f"{a:.0f}" if a is not None else "-", other_k,
                         f"{b:.0f}" if b is not None else "-", fmt_ratio(rat),
                         "-" if goal is None else ("met" if goal else "MISSED")])
            data.setdefault("goals", {})[f"{test}_{fig}_{keel_k}"] = {"keel": a, "other": b, "ratio": rat, "met": goal}

        row("https", "rps", "keel_ec", "nginx_ec")
        row("https", "p50_us", "keel_ec", "nginx_ec", "lower")
        row("https", "p99_us", "keel_ec", "nginx_ec", "lower")
        row("handshakes", "rps", "keel_ec", "nginx_ec")
        row("handshakes", "rps", "keel_rsa", "nginx_rsa")
        row("https", "rps_per_cpu_s", "keel_ec", "nginx_ec")
        row("handshakes", "rps_per_cpu_s", "keel_ec", "nginx_ec")
        row("handshakes", "rps_per_cpu_s", "keel_rsa", "nginx_rsa")
        for k in ("ec", "rsa"):
            row("full_hs", "rps", f"keel_{k}", f"nginx_{k}")
            row("full_hs", "rps_per_cpu_s", f"keel_{k}", f"nginx_{k}")
        for t in ("ping_inline_rps", "ping_mbulk_rps", "set_rps", "get_rps"):
            row("resp", t, "keel_resp", "redis")
        row("idle", "bytes_per_conn", "keel_ec", "nginx_ec", "lower")
        say(table(["test", "figure", "keel", "value", "vs", "value", "keel/other", "goal"], rows, "lllrlrrl"))
        say(f"  idle: {cfg['idle_conns']} connections ({'QUICK: fewer than the 5,000 of a full run' if quick else 'full'});"
            " handshakes: wrk -c16, Connection: close, resumed (PSK);"
            " full_hs: openssl s_time -new, full handshakes, one sequential client")
        data["status"] = "ok"
        return data
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
