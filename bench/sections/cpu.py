"""Section 12: server CPU per message at 1,000 connections of 64 B.

keel-tput ping-pongs a 64 B block on each of 1,000 connections (one block in
flight per connection) against floor-echo (the epoll floor), floor-uring-echo
(the io_uring floor), keel-echo on one loop, and keel-echo --backend io_uring
when that keel-echo has the flag. With --server-pid the client reads the
server's utime+stime (/proc/PID/stat) at the start and end of its timed run,
so CPU per message is the server's CPU time over exactly the messages echoed
in that window. On this 2-core machine the client saturates its core before
any of these servers does, so messages/s mostly measures the client; CPU per
message is the figure that tells the servers apart.

Note that on loopback a send also runs the receiving socket's TCP input in
the sender's context, so each server's figure includes some of the client's
kernel work; the share is the same for every server. utime+stime count in
clock ticks (10 ms), about 1 % of a full-mode window.

Rounds interleave the servers (the order rotates); medians over rounds, and
ratios to floor-echo from the same run.
"""

from pathlib import Path

import benchlib
from benchlib import say, progress, table, fmt_ratio

NUMBER = 12
KEY = "cpu"
TITLE = "server CPU per message: 1,000 connections of 64 B (floor-echo, floor-uring-echo, keel-echo)"

# Full mode adds ~30 s with three servers (~40 s with keel-echo-uring).
FULL = {"rounds": 5, "seconds": 1.2, "warmup": 0.4}
QUICK = {"rounds": 3, "seconds": 0.5, "warmup": 0.2}
CONNECTIONS = 1000
BLOCK = 64
FLOOR = "floor-echo"


def run(quick, bindir):
    cfg = QUICK if quick else FULL
    bindir = Path(bindir)
    result = {"section": NUMBER, "config": {**cfg, "connections": CONNECTIONS, "block": BLOCK}, "floor": FLOOR}
    client = bindir / "keel-tput"
    servers = [
        benchlib.Server(FLOOR, bindir / "floor-echo", []),
        benchlib.uring_floor(bindir),
        benchlib.Server("keel-echo", bindir / "keel-echo", ["--threads", "0"], "keel-echo (1 loop)"),
        benchlib.keel_uring(bindir),
    ]
    if not client.is_file():
        say(f"  keel-tput not built ({client}); section skipped")
        return {**result, "status": "skipped: keel-tput not built"}
    say(f"  keel-tput --connections {CONNECTIONS} --block {BLOCK} --server-pid PID; {cfg['rounds']} round(s), "
        f"{cfg['seconds']}s timed (+{cfg['warmup']}s warm-up) per run, medians")
    raw = {s.name: [] for s in servers}
    errors = {s.name: [] for s in servers}
    with benchlib.ServerSet(servers) as ss:
        live = ss.running()
        total, done = cfg["rounds"] * len(live), 0
        for r in range(cfg["rounds"]):
            parts = []
            for s in benchlib.rotated(live, r):
                done += 1
                if not s.alive():
                    s.mark_dead()
                    parts.append(f"{s.name} dead")
                    continue
                cmd = [str(client), "--port", str(s.port), "--connections", str(CONNECTIONS), "--block", str(BLOCK),
                       "--seconds", str(cfg["seconds"]), "--warmup", str(cfg["warmup"]), "--json",
                       "--server-pid", str(s.proc.pid)]
                res, err = benchlib.run_json(cmd, timeout=cfg["seconds"] + cfg["warmup"] + 60)
                if res and isinstance(res.get("server_cpu_us_per_msg"), (int, float)):
                    res["server_cpu_share"] = round(res["server_cpu_s"] / res["seconds"], 3)
                    raw[s.name].append(res)
                    parts.append(f"{s.name} {res['server_cpu_us_per_msg']:.2f}")
                else:
                    errors[s.name].append(err or "no server_cpu_us_per_msg in the output")
                    parts.append(f"{s.name} ERROR")
            progress(done, total, f"round {r + 1}/{cfg['rounds']}  server CPU us/msg: " + " | ".join(parts))
        described = {s.name: s.describe() for s in servers}

    rows = []
    floor_v = benchlib.median_of(raw[FLOOR], "server_cpu_us_per_msg")
    uring_v = benchlib.median_of(raw[benchlib.FLOOR_URING], "server_cpu_us_per_msg")
    for s in servers:
        rr = raw[s.name]
        row = {"server": s.name, "label": s.label, "rounds": rr}
        if rr:
            row["status"] = "ok"
            for k in ("server_cpu_us_per_msg", "msgs_per_s", "server_cpu_share"):
                row[k] = benchlib.median_of(rr, k)
            row["ratio_to_floor"] = benchlib.ratio(row["server_cpu_us_per_msg"], floor_v)
            if s.name == benchlib.KEEL_URING:
                row["ratio_to_uring_floor"] = benchlib.ratio(row["server_cpu_us_per_msg"], uring_v)
        else:
            row["status"] = s.status if s.status != "ok" else "failed"
        if errors[s.name]:
            row["errors"] = errors[s.name]
        rows.append(row)

    say(f"\n  server CPU per message (µs, medians over {cfg['rounds']} round(s)); x floor = server / floor-echo, "
        "lower is better; CPU share = server CPU s / wall s (< 1: the client is the bottleneck)")
    trows = []
    for row in rows:
        if row["status"] == "ok":
            trows.append([row["label"], f"{row['server_cpu_us_per_msg']:.2f}", fmt_ratio(row["ratio_to_floor"]),
                          f"{row['msgs_per_s'] / 1000:.1f}k", f"{row['server_cpu_share']:.2f}"])
        else:
            trows.append([row["label"], row["status"]])
    say(table(["server", "CPU us/msg", "x floor", "msgs/s", "CPU share"], trows))
    ku = next(r for r in rows if r["server"] == benchlib.KEEL_URING)
    if "ratio_to_uring_floor" in ku:
        say(f"  keel-echo on io_uring / floor-uring-echo: {fmt_ratio(ku['ratio_to_uring_floor'])}")
    result.update({
        "status": "ok" if all(r["status"] == "ok" or r["status"].startswith("skipped") for r in rows) else "partial",
        "client": "keel-tput --server-pid",
        "servers": described,
        "rows": rows,
    })
    return result


def plot(data, png, workdir):
    rows = [r for r in data.get("rows", []) if r.get("status") == "ok"]
    if not rows:
        return False
    dat = Path(workdir) / "cpu.dat"
    dat.write_text("".join(f"{benchlib.gp_str(r['label'])} {r['server_cpu_us_per_msg']:.3f}\n" for r in rows))
    cfg = data["config"]
    script = [
        "set terminal pngcairo size 800,420 font 'sans,10' noenhanced",
        f"set output {benchlib.gp_str(png)}",
        "set title " + benchlib.gp_str(f"keel bench: server CPU per message, {cfg['connections']} connections of "
                                       f"{cfg['block']} B (medians over {cfg['rounds']} rounds)"),
        "set style data histograms",
        "set style fill solid 0.8 border -1",
        "set boxwidth 0.6",
        "set ylabel 'server CPU (us) per message'",
        "set yrange [0:*]",
        "set grid ytics",
        "unset key",
        f"plot {benchlib.gp_str(dat)} using 2:xtic(1)",
    ]
    return benchlib.run_gnuplot(script, Path(workdir) / "cpu.gp")
