"""Section 5: dead-peer detection. How long after a peer dies does each
mechanism close the connection? keel-deadpeer prober opens three
connections to a keel-deadpeer responder, watched by keel's Heartbeat
(1 s x 3), kernel keepalive tuned the same (TCP_KEEPIDLE 1 / KEEPINTVL 1 /
KEEPCNT 3) and TCP_USER_TIMEOUT 4 s with a small write every 250 ms, injects
the fault itself once all are up and times each close from there.

  SIGSTOP     the responder process is stopped: its kernel still ACKs data
              and answers keepalive probes, so only the heartbeat notices.
  black hole  responder and prober in two network namespaces joined by a
              veth pair (`ip netns`, needs root); the responder's end of the
              link is set down, so nothing passes either way (tc netem is not
              available here, a downed link is the same silence).
  default     what plain SO_KEEPALIVE with the system's sysctls would take,
              computed (tcp_keepalive_time + intvl x probes), not waited for.

Both faults run at the same time (separate processes and connections), so
the section takes one watch period. QUICK mode runs the SIGSTOP row only.
The same outcomes are asserted by tests/heartbeat/heartbeat_test.cc
(Detection.*); here they are only measured.
"""

import json
import os
import subprocess
import time

import benchlib
from benchlib import say, progress, table

NUMBER = 5
KEY = "deadpeer"
TITLE = "dead-peer detection: keel heartbeat vs kernel keepalive vs TCP_USER_TIMEOUT"

HEARTBEAT_MS = 1000
PROBES = 3
USER_TIMEOUT_MS = 4000
MECHS = [("heartbeat", "keel heartbeat 1s x 3"), ("keepalive", "keepalive 1/1/3"),
         ("user_timeout", "TCP_USER_TIMEOUT 4s + writes")]


def sh(cmd):
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True)
    return r.returncode, (r.stdout + r.stderr).strip()


class Netns:
    """Namespaces A (198.18.0.1) and B (198.18.0.2) joined by a veth pair
    named after them; deleting the namespaces removes the pair."""

    def __init__(self):
        tag = f"kbd{os.getpid() % 100000}"
        self.a, self.b = tag + "a", tag + "b"
        self.created = []
        self.error = None
        if os.geteuid() != 0:
            self.error = f"needs root to create network namespaces (uid {os.geteuid()})"
            return
        steps = [f"ip netns add {self.a}", f"ip netns add {self.b}",
                 f"ip link add {self.a} netns {self.a} type veth peer name {self.b} netns {self.b}",
                 f"ip -n {self.a} addr add 198.18.0.1/24 dev {self.a}",
                 f"ip -n {self.b} addr add 198.18.0.2/24 dev {self.b}",
                 f"ip -n {self.a} link set lo up", f"ip -n {self.b} link set lo up",
                 f"ip -n {self.a} link set {self.a} up", f"ip -n {self.b} link set {self.b} up"]
        for step in steps:
            rc, out = sh(step)
            if rc != 0 and step.startswith("ip netns add"):
                rc, out = sh(step)  # a concurrent first `ip netns add` can race on the /var/run/netns mount
            if rc != 0:
                self.error = f"`{step}` failed (exit {rc}): {out}"
                return
            if step.startswith("ip netns add"):
                self.created.append(step.split()[-1])

    def close(self):
        for ns in self.created:
            sh(f"ip netns del {ns}")
        self.created = []


def start_responder(argv):
    """Starts a responder; returns (Popen, port) or (Popen/None, error text)."""
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
    ln = p.stdout.readline()  # the first line is the listening line (or an error)
    m = benchlib.LISTEN_RE.search(ln or "")
    if not m:
        p.kill()
        p.wait()
        return None, "responder did not start: " + (ln.strip() or f"exit {p.poll()}")
    return p, int(m.group(2))


def kill(p):
    if p is not None and p.poll() is None:
        p.kill()  # also ends a stopped process
        p.wait()


def default_keepalive():
    vals = {}
    for k in ("tcp_keepalive_time", "tcp_keepalive_intvl", "tcp_keepalive_probes"):
        v = benchlib.read_text(f"/proc/sys/net/ipv4/{k}")
        vals[k] = int(v) if v and v.isdigit() else None
    if None in vals.values():
        return {"status": "sysctls unreadable", **vals}
    s = vals["tcp_keepalive_time"] + vals["tcp_keepalive_intvl"] * vals["tcp_keepalive_probes"]
    return {"status": "ok", **vals, "seconds": s}


def hms(s):
    h, rem = divmod(int(s), 3600)
    m, sec = divmod(rem, 60)
    return f"{h} h {m:02d} min {sec:02d} s" if h else f"{m} min {sec:02d} s"


def run(quick, bindir):
    res = {"section": NUMBER, "quick": quick, "heartbeat_ms": HEARTBEAT_MS, "probes": PROBES,
           "user_timeout_ms": USER_TIMEOUT_MS}
    watch_ms = 5000 if quick else 8000
    res["watch_ms"] = watch_ms
    binary = bindir / "keel-deadpeer"
    dflt = default_keepalive()
    res["default_keepalive"] = dflt
    if not binary.is_file():
        res["status"] = "skipped: keel-deadpeer not built"
        say("  " + res["status"])
        return res
    say(f"  budget {HEARTBEAT_MS * (PROBES + 1) / 1000:.0f} s for each mechanism; each fault watched up to "
        f"{watch_ms / 1000:.0f} s" + (" (QUICK: SIGSTOP row only)" if quick else ""))

    rows = {}
    procs = []  # (name, responder, prober)
    ns = None
    try:
        # SIGSTOP: on loopback.
        resp, port = start_responder([str(binary), "responder", "--host", "127.0.0.1", "--port", "0"])
        if resp is None:
            rows["sigstop"] = {"status": port}
        else:
            prober = subprocess.Popen(
                [str(binary), "prober", "--host", "127.0.0.1", "--port", str(port), "--fault",
                 f"kill -STOP {resp.pid}", "--watch-ms", str(watch_ms), "--heartbeat-ms", str(HEARTBEAT_MS),
                 "--probes", str(PROBES), "--user-timeout-ms", str(USER_TIMEOUT_MS)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            procs.append(("sigstop", resp, prober))
        progress(1, 3, "SIGSTOP: responder " + (f"pid {resp.pid} port {port}" if resp else str(port)))

        # Black hole: two namespaces.
        if quick:
            rows["blackhole"] = {"status": "skipped in QUICK mode"}
        else:
            ns = Netns()
            if ns.error:
                rows["blackhole"] = {"status": "skipped: " + ns.error}
            else:
                resp2, port2 = start_responder(["ip", "netns", "exec", ns.b, str(binary), "responder", "--host",
                                                "198.18.0.2", "--port", "0"])
                if resp2 is None:
                    rows["blackhole"] = {"status": port2}
                else:
                    prober2 = subprocess.Popen(
                        ["ip", "netns", "exec", ns.a, str(binary), "prober", "--host", "198.18.0.2", "--port",
                         str(port2), "--fault", f"ip -n {ns.b} link set {ns.b} down", "--watch-ms", str(watch_ms),
                         "--heartbeat-ms", str(HEARTBEAT_MS), "--probes", str(PROBES), "--user-timeout-ms",
                         str(USER_TIMEOUT_MS)],
                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                    procs.append(("blackhole", resp2, prober2))
            progress(2, 3, "black hole: " + (f"namespaces {ns.a} / {ns.b}, veth down on {ns.b}" if not ns.error
                                             else rows["blackhole"]["status"]))

        for name, resp, prober in procs:
            try:
                out, err = prober.communicate(timeout=watch_ms / 1000 + 20)
            except subprocess.TimeoutExpired:
                prober.kill()
                out, err = prober.communicate()
                rows[name] = {"status": "failed: prober timed out"}
                continue
            line = next((ln for ln in reversed(out.strip().splitlines()) if ln.startswith("{")), None)
            if prober.returncode != 0 or not line:
                rows[name] = {"status": f"failed: prober exit {prober.returncode}: "
                                        + ((err or out).strip().splitlines() or ["no output"])[-1]}
            else:
                rows[name] = dict(json.loads(line), status="ok")
        progress(3, 3, "probers done: " + ", ".join(f"{k} {v['status']}" for k, v in rows.items()))
    finally:
        for _, resp, prober in procs:
            kill(prober)
            kill(resp)
        if ns is not None:
            ns.close()
    res["rows"] = rows
    res["status"] = "ok"

    def cell(row, mech):
        if row.get("status") != "ok":
            return None
        m = row.get(mech) or {}
        if m.get("detected"):
            return f"{m['ms'] / 1000:.2f} s ({m['reason']})"
        return f"not detected within {row['watched_ms'] / 1000:.0f} s"

    trows = []
    for name, label in (("sigstop", "peer process SIGSTOPped"), ("blackhole", "black hole (veth down)")):
        row = rows.get(name, {"status": "not run"})
        if row.get("status") == "ok":
            trows.append([label] + [cell(row, m) for m, _ in MECHS])
        else:
            trows.append([label, row["status"]])
    if dflt["status"] == "ok":
        trows.append([f"default keepalive (sysctls {dflt['tcp_keepalive_time']} + {dflt['tcp_keepalive_intvl']} x "
                      f"{dflt['tcp_keepalive_probes']})", "-", f"{dflt['seconds']} s = {hms(dflt['seconds'])}, "
                      "computed", "-"])
    else:
        trows.append(["default keepalive", dflt["status"]])
    say(f"\n  {'QUICK mode: ' if quick else ''}time from the fault to the close (close reason in brackets). Each "
        "mechanism counts its 4 s from the peer's last sign of life: the fault comes right after a PONG (the "
        "heartbeat's worst case, so ~4.0 s), while keepalive's 1 s probe cycle is at a random phase (3-4 s, more "
        "if a probe ACK does not count); TCP_USER_TIMEOUT counts from the first unacknowledged write after the "
        "fault. quiet_before_ms in the JSON is TCP_INFO's time since the last segment at the fault")
    say(table(["fault"] + [lbl for _, lbl in MECHS], trows, "llll"))
    return res
