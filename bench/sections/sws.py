"""Section 10: silly-window avoidance, measured on loopback.

keel-sws (bench/sws.cc) moves a fixed number of bytes over one loopback
connection: a sender thread writes 64 KiB blocks as fast as it may, the
receiver drains them R bytes per recv(). The receiver's SO_RCVBUF is either
small (set before listen(); autotuning is then off) or left to the kernel,
and the MSS is either loopback's own (about 64 KiB) or clamped with
TCP_MAXSEG to 1448 B, an Ethernet path's, so that a small window spans
several segments as it would on a real network.

Silly-window syndrome is a receiver announcing every few bytes it frees and
a sender filling each sliver with a tiny segment. If Linux had it, a
receiver reading 1 B at a time would pull 1 B segments. What the counters
show instead (both ends' TCP_INFO before and after; `ss -tin` halfway
through, in the JSON): the mean data segment size, the receiver's segments
(pure ACKs: its window updates) and the bytes each released, and the
advertised windows in the middle of the transfer. Rounds interleave the
cases; figures are medians over rounds.
"""

import statistics

import benchlib
from benchlib import say, progress, table

NUMBER = 10
KEY = "sws"
TITLE = "silly-window avoidance: a small receive buffer drained a few bytes at a time"

FULL = {"rounds": 3, "bytes": 512 << 10}
QUICK = {"rounds": 1, "bytes": 256 << 10}
# (key, label, SO_RCVBUF (0: autotuned), bytes per read)
CASES = [("small_1", "small buffer, 1 B reads", 4096, 1),
         ("small_64", "small buffer, 64 B reads", 4096, 64),
         ("small_4k", "small buffer, 4 KiB reads", 4096, 4096),
         ("auto_1", "autotuned, 1 B reads", 0, 1),
         ("auto_64k", "autotuned, 64 KiB reads", 0, 65536)]
MSS = [0, 1448]  # 0: loopback's own
FIELDS = ["mib_per_s", "seconds", "reads", "sender_data_segs", "mean_segment_bytes", "receiver_segs_out",
          "bytes_per_receiver_segment", "reads_per_window_update", "mid_rcv_wnd", "mid_snd_wnd", "mid_rcv_ssthresh",
          "snd_mss", "rcvbuf_effective"]


def run(quick, bindir):
    cfg = QUICK if quick else FULL
    tool = bindir / "keel-sws"
    data = {"section": NUMBER, "rounds": cfg["rounds"], "bytes": cfg["bytes"], "tool": benchlib.rel(tool),
            "results": {}}
    if not tool.is_file():
        data["status"] = "skipped: keel-sws not built"
        say("  " + data["status"])
        return data
    say(f"  {cfg['bytes'] >> 10} KiB per run, {cfg['rounds']} round(s); SO_RCVBUF 4096 (the kernel doubles it) or"
        " autotuned; MSS loopback's or clamped to 1448 B")
    cells = [(c, m) for m in MSS for c in CASES]
    raw = {(c[0], m): [] for c, m in cells}
    errors = {}
    jobs = [(r, cell) for r in range(cfg["rounds"]) for cell in benchlib.rotated(cells, r)]
    for n, (r, (case, mss)) in enumerate(jobs, 1):
        key, label, rcvbuf, read = case
        cmd = [str(tool), "--rcvbuf", str(rcvbuf), "--read", str(read), "--bytes", str(cfg["bytes"]),
               "--mss", str(mss), "--json"] + (["--ss"] if r == 0 else [])
        fig, err = benchlib.run_json(cmd, timeout=120)
        tag = f"{label}, MSS {mss or 'loopback'}"
        if fig is None:
            errors[(key, mss)] = err
            progress(n, len(jobs), f"round {r + 1} {tag}: error: {err}")
            continue
        raw[(key, mss)].append(fig)
        progress(n, len(jobs), f"round {r + 1} {tag:<40} {fig['mib_per_s']:8.2f} MiB/s  segments of "
                 f"{fig['mean_segment_bytes']:.0f} B  a window update per {fig['bytes_per_receiver_segment']:.0f} B")

    rows = []
    for case, mss in cells:
        key, label, rcvbuf, read = case
        rs = raw[(key, mss)]
        entry = {"label": label, "rcvbuf_set": rcvbuf, "read_size": read, "mss_set": mss, "rounds": rs}
        if (key, mss) in errors:
            entry["error"] = errors[(key, mss)]
        if rs:
            for f in FIELDS:
                vals = [x[f] for x in rs if isinstance(x.get(f), (int, float))]
                entry[f] = statistics.median(vals) if vals else None
            entry["ss"] = rs[0].get("ss", [])
            rows.append([label, str(mss or "loopback") + f" ({entry['snd_mss']:.0f})", f"{entry['rcvbuf_effective']:.0f}",
                         f"{entry['mib_per_s']:.2f}", f"{entry['reads']:.0f}", f"{entry['sender_data_segs']:.0f}",
                         f"{entry['mean_segment_bytes']:.0f}", f"{entry['receiver_segs_out']:.0f}",
                         f"{entry['bytes_per_receiver_segment']:.0f}", f"{entry['mid_rcv_wnd']:.0f}",
                         f"{entry['mid_snd_wnd']:.0f}"])
        else:
            rows.append([label, str(mss or "loopback"), f"no figures: {errors.get((key, mss), 'not run')}"])
        data["results"][f"{key}_mss{mss or 'lo'}"] = entry
    say(table(["receiver", "MSS set (used)", "SO_RCVBUF", "MiB/s", "reads", "data segs", "mean seg B",
               "rcvr segs", "B per rcvr seg", "rcv_wnd mid", "snd_wnd mid"], rows, "llrrrrrrrrr"))
    say("  rcvr segs: the receiver's segments, all pure ACKs (its window updates); rcv_wnd/snd_wnd mid: the window"
        " the receiver last advertised and the one the sender holds, halfway through (TCP_INFO).")
    small = data["results"].get("small_1_mss1448", {})
    if small.get("mean_segment_bytes"):
        data["summary"] = {
            "one_byte_reads_mean_segment_bytes": small["mean_segment_bytes"],
            "one_byte_reads_bytes_per_window_update": small["bytes_per_receiver_segment"],
        }
        say(f"  1 B reads on a small buffer, MSS 1448: segments of {small['mean_segment_bytes']:.0f} B on average and a"
            f" window update per {small['bytes_per_receiver_segment']:.0f} B read, not per byte: the receiver holds its"
            " window shut until it can open it by a useful amount, and the sender does not fill slivers.")
    data["status"] = "ok"
    return data
