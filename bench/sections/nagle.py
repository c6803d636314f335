"""Section 2: the Nagle / delayed-ACK matrix, latency and packets side by side.

Three blocks, all driven by keel-pingpong (blocking sockets, no keel), every
cell reporting p50/p99 and the segments each end sent per exchange. The
segment counts come from TCP_INFO on the client's socket and, for the
server's socket, from the same struct fetched over sock_diag by 4-tuple
(bench/tcp_stats.h), read before and after the timed round trips:

  A. the 20 B matrix: {client Nagle on, off} x {write-read, write-write-read}
     against keel-rr with the kernel, latency and throughput profiles (and
     latency with setQuickAckOnlyWhenSilent, which leaves out the re-arm,
     and the pure ACK it sends, after a read that was answered), and
     floor-echo as the reference (an echo server answers each piece at once,
     so its reply carries the ACK and the stall never shows).
  B. many tiny writes: a 100 B request written as 100 writes of 1 B, then
     the 100 B read. Client: Nagle on, Nagle off, Nagle off with TCP_CORK
     around the writes, Nagle off with MSG_MORE on all but the last write;
     server: keel-rr kernel, latency, throughput (one write per reply).
  C. tiny writes on the server: one 100 B request, the reply written by
     keel-rr as 100 writes of 1 B in one dispatch. kernel (Nagle, no
     coalescing), latency (TCP_NODELAY + keel's write coalescing), latency
     with coalescing forced off, throughput (TCP_CORK around the dispatch),
     kernel with coalescing forced on. This is what keel's coalescing buys.

keel-rr answers only whole requests. Each cell is sized by a short untimed
pilot so that a stalled cell (~44 ms a round trip) gets a few dozen round
trips and a fast one thousands; rounds interleave the servers in an order
that rotates; figures are medians over rounds.
"""

import statistics

import benchlib
from benchlib import say, progress, table, fmt_us, fmt_ratio, median_of, ratio, Server, ServerSet, run_json, rotated

NUMBER = 2
KEY = "nagle"
TITLE = "Nagle / delayed-ACK matrix: latency and segments per exchange"

FLOOR = "floor-echo"
STALL_US = 5000.0  # a loopback round trip this slow is a timer (delayed ACK), not work
PCTS = ["p50_us", "p90_us", "p99_us", "p999_us", "max_us", "mean_us"]
FULL = {"size": 20, "tiny": 100, "rounds": 3, "pilot": 8, "budget_s": 0.5, "min": 30, "max": 5000}
QUICK = dict(FULL, rounds=1, pilot=4, budget_s=0.1, min=10, max=1000)

# A client configuration: (nodelay, mode, batch).
A_CONFIGS = [(0, "echo", "none"), (0, "wwr", "none"), (1, "echo", "none"), (1, "wwr", "none")]
B_CONFIGS = [(0, "tiny", "none"), (1, "tiny", "none"), (1, "tiny", "cork"), (1, "tiny", "msgmore")]
C_CONFIGS = [(1, "echo", "none")]
MODE_LABEL = {"echo": "write-read", "wwr": "write-write-read", "tiny": "1 B writes, read"}
BATCH_LABEL = {"none": "", "cork": " + TCP_CORK", "msgmore": " + MSG_MORE"}


def nagle_label(nodelay):
    return "Nagle on" if nodelay == 0 else "Nagle off"


def client_label(c):
    return nagle_label(c[0]) + BATCH_LABEL[c[2]]


def servers_for(bindir, cfg):
    rr = bindir / "keel-rr"
    size, tiny = str(cfg["size"]), str(cfg["tiny"])
    a = [Server(f"keel-rr/{p}", rr, ["--request-size", size, "--profile", p], f"keel-rr {p}")
         for p in ("kernel", "latency", "throughput")]
    a.insert(2, Server("keel-rr/latency-silent", rr, ["--request-size", size, "--profile", "latency",
                                                      "--quickack-when-silent"], "latency, ack-when-silent"))
    a.append(Server(FLOOR, bindir / "floor-echo", [], "floor-echo (ref)"))
    b = [Server(f"tiny/keel-rr/{p}", rr, ["--request-size", tiny, "--profile", p], f"keel-rr {p}")
         for p in ("kernel", "latency", "throughput")]
    split = ["--request-size", tiny, "--reply-writes", tiny]
    c = [Server("split/kernel", rr, split + ["--profile", "kernel"], "kernel (Nagle)"),
         Server("split/latency", rr, split + ["--profile", "latency"], "latency (NODELAY+coalescing)"),
         Server("split/latency-nocoalesce", rr, split + ["--profile", "latency", "--coalesce", "off"],
                "latency, coalescing off"),
         Server("split/throughput", rr, split + ["--profile", "throughput"], "throughput (CORK)"),
         Server("split/kernel-coalesce", rr, split + ["--profile", "kernel", "--coalesce", "on"],
                "kernel + coalescing")]
    return a, b, c


def per_exchange(res):
    """Segments per exchange from one run's counters, or None."""
    c, s, n = res.get("client_tcp"), res.get("server_tcp"), res.get("count") or 0
    if not c or not n:
        return None
    out = {"c2s": c["segs_out"] / n, "c2s_data": c["data_segs_out"] / n,
           "s2c": c["segs_in"] / n, "s2c_data": c["data_segs_in"] / n}
    if s:  # the server's own view; on loopback it mirrors the client's, which checks both reads
        out["server_out"] = s["segs_out"] / n
        out["server_in"] = s["segs_in"] / n
    return out


def median_segs(rounds):
    per = [p for p in (per_exchange(r) for r in rounds) if p]
    if not per:
        return None
    return {k: round(statistics.median(p[k] for p in per if k in p), 3) for k in per[0]}


def measure(block, servers, configs, size, cfg, client, done, total):
    """Pilot, then rounds; returns {(server, config): [results]}, errors, counts, progress."""
    raw = {(s.name, c): [] for s in servers for c in configs}
    errors = {(s.name, c): [] for s in servers for c in configs}
    counts = {}
    live = [s for s in servers if s.status == "ok"]

    def ping(s, c, count, warmup):
        nodelay, mode, batch = c
        cmd = [str(client), "--port", str(s.port), "--size", str(size), "--count", str(count), "--warmup",
               str(warmup), "--nodelay", str(nodelay), "--mode", mode, "--batch", batch, "--json"]
        return run_json(cmd, timeout=max(60.0, count * 0.1))

    for c in configs:
        for s in live:
            res, err = ping(s, c, cfg["pilot"], 1)
            typical = res["p50_us"] if res else 1000.0  # the median: one slow pilot sample must not shrink a cell
            counts[(s.name, c)] = max(cfg["min"], min(cfg["max"], int(cfg["budget_s"] * 1e6 / max(typical, 1.0))))
            if err:
                errors[(s.name, c)].append("pilot: " + err)
    for r in range(cfg["rounds"]):
        for c in configs:
            parts = []
            for s in rotated(live, r):
                done += 1
                if not s.alive():
                    s.mark_dead()
                    parts.append(f"{s.name} dead")
                    continue
                count = counts[(s.name, c)]
                res, err = ping(s, c, count, max(2, min(200, count // 10)))
                if res:
                    raw[(s.name, c)].append(res)
                    segs = per_exchange(res)
                    parts.append(f"{s.label} {fmt_us(res['p50_us'])}"
                                 + (f" {segs['c2s']:.1f}/{segs['s2c']:.1f} segs" if segs else ""))
                else:
                    errors[(s.name, c)].append(err)
                    parts.append(f"{s.label} ERROR")
            progress(done, total, f"{block} round {r + 1}/{cfg['rounds']} {client_label(c)}, {MODE_LABEL[c[1]]}: "
                     + " | ".join(parts))
    return raw, errors, counts, done


def make_rows(block, servers, configs, size, raw, errors, counts, floor=None):
    rows = []
    for c in configs:
        nodelay, mode, batch = c
        fr = raw.get((floor, c), []) if floor else []
        floor_p50, floor_p99 = median_of(fr, "p50_us"), median_of(fr, "p99_us")
        for s in servers:
            rr = raw[(s.name, c)]
            row = {"block": block, "server": s.name, "label": s.label, "args": s.args,
                   "profile": s.name.rsplit("/", 1)[1] if "/" in s.name else None,
                   "client_nagle": "on" if nodelay == 0 else "off", "nodelay": nodelay, "mode": mode,
                   "mode_label": MODE_LABEL[mode], "batch": batch, "size": size, "count": counts.get((s.name, c)),
                   "rounds": rr}
            if rr:
                row["status"] = "ok"
                for k in PCTS:
                    row[k] = median_of(rr, k)
                row["stalled"] = row["p50_us"] >= STALL_US
                row["stalled_p99"] = row["p99_us"] >= STALL_US
                row["segs_per_exchange"] = median_segs(rr)
                if floor:
                    row["ratio_to_floor"] = {"p50": ratio(row["p50_us"], floor_p50),
                                             "p99": ratio(row["p99_us"], floor_p99)}
            else:
                row["status"] = s.status if s.status != "ok" else "failed"
            if errors[(s.name, c)]:
                row["errors"] = errors[(s.name, c)]
            rows.append(row)
    return rows


def find(rows, server, c):
    return next((x for x in rows if x["server"] == server and (x["nodelay"], x["mode"], x["batch"]) == c), None)


def segs_text(row):
    g = row.get("segs_per_exchange")
    if not g:
        return "-"
    return f"{g['c2s']:.1f}/{g['s2c']:.1f} ({g['c2s_data']:.1f}/{g['s2c_data']:.1f})"


def cell(row, with_ratio=False):
    if row is None or row["status"] != "ok":
        return (row or {}).get("status", "-")
    mark = "  << STALL" if row.get("stalled") else "  RESCUED" if row.get("rescued") else \
        "  (p99 stall)" if row.get("stalled_p99") else ""
    rt = f" ({fmt_ratio(row['ratio_to_floor']['p50'])})" if with_ratio and row.get("ratio_to_floor") else ""
    return f"{fmt_us(row['p50_us'])} / {fmt_us(row['p99_us'])}{rt}{mark}"


def print_block(title, rows, servers, configs, with_ratio=False):
    say(f"\n  {title}")
    say("  p50 / p99 in us (ms where marked); segs: client->server / server->client segments per exchange,"
        " (data-carrying ones) in brackets")
    trows = []
    for c in configs:
        line = [client_label(c), MODE_LABEL[c[1]]]
        for s in servers:
            row = find(rows, s.name, c)
            line += [cell(row, with_ratio), segs_text(row) if row else "-"]
        trows.append(line)
    head = ["client", "pattern"]
    for s in servers:
        head += [s.label, "segs"]
    say(table(head, trows, "ll" + "l" * (2 * len(servers))))


def run(quick, bindir):
    cfg = QUICK if quick else FULL
    size, tiny = cfg["size"], cfg["tiny"]
    client = bindir / "keel-pingpong"
    a_srv, b_srv, c_srv = servers_for(bindir, cfg)
    data = {"section": NUMBER, "request_size": size, "tiny_size": tiny, "rounds": cfg["rounds"], "config": cfg,
            "stall_threshold_us": STALL_US, "floor": FLOOR,
            "client": "keel-pingpong --json (segments: TCP_INFO on the client, sock_diag for the server)"}
    say(f"  A: {size} B requests (write-write-read sends {size // 2} + {size - size // 2} B); B: {tiny} B requests as"
        f" {tiny} writes of 1 B; C: {tiny} B replies as {tiny} writes of 1 B. {cfg['rounds']} round(s); each cell"
        f" sized by a {cfg['pilot']}-round-trip pilot to ~{cfg['budget_s']}s ({cfg['min']}..{cfg['max']} round trips)")
    if not client.is_file():
        say(f"  keel-pingpong not built ({client}); section skipped")
        data.update(status="client not built", rows=[])
        return data
    with ServerSet(a_srv + b_srv + c_srv):
        live = lambda ss: [s for s in ss if s.status == "ok"]  # noqa: E731
        total = cfg["rounds"] * (len(live(a_srv)) * len(A_CONFIGS) + len(live(b_srv)) * len(B_CONFIGS)
                                 + len(live(c_srv)) * len(C_CONFIGS))
        done = 0
        ra, ea, ca, done = measure("A", a_srv, A_CONFIGS, size, cfg, client, done, total)
        rb, eb, cb, done = measure("B", b_srv, B_CONFIGS, tiny, cfg, client, done, total)
        rc, ec, cc, done = measure("C", c_srv, C_CONFIGS, tiny, cfg, client, done, total)
        data["servers"] = {s.name: s.describe() for s in a_srv + b_srv + c_srv}

    rows = make_rows("A", a_srv, A_CONFIGS, size, ra, ea, ca, floor=FLOOR)
    # A cell is "rescued" when the kernel profile stalls there and a latency profile does not.
    for c in A_CONFIGS:
        k = find(rows, "keel-rr/kernel", c)
        for lat in (find(rows, "keel-rr/latency", c), find(rows, "keel-rr/latency-silent", c)):
            if lat is not None and lat["status"] == "ok":
                lat["rescued"] = bool(k and k["status"] == "ok" and k["stalled"] and not lat["stalled"])
    tiny_rows = make_rows("B", b_srv, B_CONFIGS, tiny, rb, eb, cb)
    split_rows = make_rows("C", c_srv, C_CONFIGS, tiny, rc, ec, cc)

    print_block(f"A. {size} B request/reply (x floor-echo p50 in the same client config); STALL: p50 >= "
                f"{STALL_US / 1000:.0f} ms", rows, a_srv, A_CONFIGS, with_ratio=True)
    print_block(f"B. {tiny} writes of 1 B, then a {tiny} B read (keel-rr replies in one write)", tiny_rows, b_srv,
                B_CONFIGS)
    say(f"\n  C. one {tiny} B write, the reply written as {tiny} writes of 1 B by keel-rr (client Nagle off)")
    trows = []
    for s in c_srv:
        row = find(split_rows, s.name, C_CONFIGS[0])
        trows.append([s.label, cell(row), segs_text(row)])
    say(table(["keel-rr server", "p50 / p99", "segs c->s / s->c (data)"], trows, "lll"))
    stalls = [x for x in rows + tiny_rows + split_rows if x.get("stalled")]
    say(f"  stalled cells: {len(stalls)}" + "".join(
        f"\n    - {x['block']} {x['label']}: {client_label((x['nodelay'], x['mode'], x['batch']))}, "
        f"{x['mode_label']}: p50 {fmt_us(x['p50_us'])}" for x in stalls))
    data.update(status="ok", rows=rows, tiny_rows=tiny_rows, split_reply_rows=split_rows)
    return data


def plot(ng, path, work):
    rows = [r for r in ng.get("rows", []) if r.get("status") == "ok"]
    if not rows:
        return False
    servers = []
    for r in rows:
        if r["server"] not in servers:
            servers.append(r["server"])
    colors = {"keel-rr/kernel": "#d95f02", "keel-rr/latency": "#1b9e77", "keel-rr/latency-silent": "#66a61e",
              "keel-rr/throughput": "#e7298a",
              FLOOR: "#7570b3"}
    gp = benchlib.gp_str
    data, lbl = work / "nagle.dat", work / "nagle-labels.dat"
    step = len(servers) + 1
    with open(data, "w") as f, open(lbl, "w") as fl:
        for ci, c in enumerate(A_CONFIGS):
            for si, s in enumerate(servers):
                row = find(rows, s, c)
                if row is None:
                    continue
                x = ci * step + si
                f.write(f"{x} {row['p50_us']:.3f} {row['p99_us']:.3f} {int(colors.get(s, '#666666')[1:], 16)}\n")
                g = row.get("segs_per_exchange")
                text = fmt_us(row["p50_us"]) + (f" {g['c2s'] + g['s2c']:.1f}seg" if g else "")
                text += " STALL" if row.get("stalled") else " rescued" if row.get("rescued") else ""
                kind = 1 if row.get("stalled") else 2 if row.get("rescued") else 0
                fl.write(f"{x} {max(row['p50_us'], row['p99_us']) * 1.3:.3f} {gp(text)} {kind}\n")
    xt = ", ".join(f"{gp(nagle_label(c[0]) + chr(10) + MODE_LABEL[c[1]])} {ci * step + (len(servers) - 1) / 2:.1f}"
                   for ci, c in enumerate(A_CONFIGS))
    keys = ", ".join(f"NaN with boxes fs solid 0.8 lc rgb {gp(colors.get(s, '#666666'))} title {gp(s)}"
                     for s in servers)
    script = [
        "set terminal pngcairo size 1200,600 font 'sans,10' noenhanced",
        f"set output {gp(path)}",
        "set title " + gp(f"keel bench: Nagle / delayed-ACK matrix, {ng['request_size']} B request (bars: p50, "
                          "whiskers up to p99; log scale; labels: p50 and segments per exchange, both ways)"),
        "set logscale y", "set yrange [5:3000000]", "set ylabel 'round trip (us)'", "set grid ytics",
        f"set xrange [-0.8:{len(A_CONFIGS) * step - 1.2}]", f"set xtics ({xt}) font 'sans,9'",
        "set boxwidth 0.85", "set bmargin 4", "set style fill solid 0.8 border -1", "set key top left",
        "set arrow from graph 0, first 40000 to graph 1, first 40000 nohead dt 2 lc rgb '#cc0000'",
        "set label 'delayed-ACK timer, about 40 ms' at graph 0.75, first 52000 tc rgb '#cc0000' font 'sans,8'",
        "plot " + ", ".join([
            f"{gp(data)} using 1:2:4 with boxes lc rgb variable notitle",
            f"{gp(data)} using 1:2:2:3 with yerrorbars lc rgb '#333333' pt -1 notitle",
            f"{gp(lbl)} using 1:2:3:($4==1 ? 0xcc0000 : $4==2 ? 0x008800 : 0x333333) with labels rotate by 90 "
            "left tc rgb variable font 'sans,8' notitle",
            keys,
        ]),
    ]
    return benchlib.run_gnuplot(script, work / "nagle.gp")
