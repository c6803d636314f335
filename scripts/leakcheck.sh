#!/usr/bin/env bash
# Leak check of the examples: each example binary in BUILD_DIR/bin runs under
# valgrind (memcheck), serves one tiny real exchange on a free port, is
# stopped with SIGTERM, and must exit 0 with no definite or indirect leak and
# no memory error.
#
#   scripts/leakcheck.sh [BUILD_DIR]      (default build/debug)
#
# An example that is not built is reported as "not built" and does not fail
# the run (examples are still being added). Valgrind logs are kept in
# BUILD_DIR/leakcheck/<name>.valgrind.log.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build/debug}
command -v valgrind >/dev/null || { echo "leakcheck: valgrind is not installed (scripts/install-deps.sh)"; exit 1; }
mkdir -p "$build/leakcheck"
exec python3 - "$build" <<'PY'
import os, re, select, signal, socket, struct, subprocess, sys, time

build = sys.argv[1]
logdir = os.path.join(build, "leakcheck")
START_TIMEOUT = 60   # valgrind start-up of a debug binary is slow on a busy machine
EXCHANGE_TIMEOUT = 30


def recv_until(sock, want: bytes, timeout=EXCHANGE_TIMEOUT) -> bytes:
    """Reads until `want` has been seen (or fails on EOF/timeout)."""
    sock.settimeout(timeout)
    got = b""
    deadline = time.monotonic() + timeout
    while want not in got:
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {want!r}; got {got[:200]!r}")
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError(f"EOF before {want!r}; got {got[:200]!r}")
        got += chunk
    return got


def connect(port):
    return socket.create_connection(("127.0.0.1", port), timeout=EXCHANGE_TIMEOUT)


# ---- one tiny exchange per example -----------------------------------------
def ex_echo(port):
    with connect(port) as s:
        s.sendall(b"hello keel\n")
        recv_until(s, b"hello keel\n")


def hb_frame(kind, seq):
    body = b"KLHB" + struct.pack(">BBHQQ", 1, kind, 0, seq, 123456789)
    return struct.pack(">I", len(body) | 0x80000000) + body


def ex_heartbeat(port):
    with connect(port) as s:
        s.sendall(hb_frame(1, 42))  # PING
        got = recv_until(s, b"KLHB")
        while len(got) < 28:
            got += s.recv(64)
        assert got[4:10] == b"KLHB\x01\x02", f"not a PONG: {got!r}"
        assert struct.unpack(">Q", got[12:20])[0] == 42, "PONG does not echo the sequence"


def ex_sockperf(port):
    msg = struct.pack(">QHI", 7, 3, 64) + b"x" * 50  # client + pong-request, 64 bytes
    reply = struct.pack(">QHI", 7, 2, 64)
    with connect(port) as s:
        s.sendall(msg)
        assert recv_until(s, reply).startswith(reply)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.settimeout(EXCHANGE_TIMEOUT)
        u.sendto(msg, ("127.0.0.1", port))
        data, _ = u.recvfrom(65536)
        assert data.startswith(reply), f"UDP reply {data[:14]!r}"


def ex_resp(port):
    with connect(port) as s:
        s.sendall(b"PING\r\n")
        recv_until(s, b"+PONG\r\n")
        s.sendall(b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n")
        recv_until(s, b"$5\r\nvalue\r\n")


def ex_http(port):
    with connect(port) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        head = recv_until(s, b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head[:100]
        m = re.search(rb"(?i)content-length: *(\d+)", head)
        body = head.split(b"\r\n\r\n", 1)[1]
        while m and len(body) < int(m.group(1)):
            body += s.recv(65536)


def ex_chat(port):
    with connect(port) as a, connect(port) as b:
        recv_until(a, b"\n")
        recv_until(b, b"\n")
        a.sendall(b"hello room\n")
        recv_until(b, b"hello room\n")


def ex_upload(port):
    data = b"hello upload\n" * 1000
    h = 14695981039346656037  # FNV-1a 64, as the example documents
    for byte in data:
        h = ((h ^ byte) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    with connect(port) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)  # "that was all"; the answer comes after our FIN
        answer = recv_until(s, b"\n")
        assert answer == f"{len(data)} {h:016x}\n".encode(), f"answer {answer!r}"


def ex_nagle(port):
    with connect(port) as s:
        s.sendall(b"0123456789")  # one 20-byte request in two pieces, as its client does
        s.sendall(b"abcdefghij")
        got = b""
        while len(got) < 20:
            chunk = s.recv(64)
            assert chunk, f"EOF after {got!r}"
            got += chunk


def frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def ex_presence(port):
    with connect(port) as a, connect(port) as b:
        a.sendall(frame(b"JOIN alice"))
        recv_until(a, b"WELCOME alice")
        b.sendall(frame(b"JOIN bob"))
        recv_until(a, b"JOINED bob")
        b.sendall(frame(b"STATUS here"))
        recv_until(a, b"STATUS bob here")


EXAMPLES = [  # binary, arguments before --port, exchange
    ("keel-echo", [], ex_echo),
    ("keel-heartbeat", ["server"], ex_heartbeat),
    ("keel-sockperf", [], ex_sockperf),
    ("keel-resp", [], ex_resp),
    ("keel-http", [], ex_http),
    ("keel-chat", [], ex_chat),
    ("keel-upload", ["server"], ex_upload),
    ("keel-nagle", ["server"], ex_nagle),
    ("keel-presence", ["server"], ex_presence),
]


def run(name, args, exchange):
    binary = os.path.join(build, "bin", name)
    if not os.access(binary, os.X_OK):
        return "not built", True
    vlog = os.path.join(logdir, f"{name}.valgrind.log")
    cmd = ["valgrind", "--leak-check=full", "--show-leak-kinds=definite,indirect",
           "--errors-for-leak-kinds=definite,indirect", "--error-exitcode=99",
           f"--log-file={vlog}", binary, *args, "--port", "0"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        out = b""
        deadline = time.monotonic() + START_TIMEOUT
        port = None
        while port is None:
            left = deadline - time.monotonic()
            if left <= 0 or p.poll() is not None:
                return f"FAILED: no 'listening on' line (exit {p.poll()}); see {vlog}", False
            r, _, _ = select.select([p.stdout], [], [], left)
            if r:
                chunk = os.read(p.stdout.fileno(), 4096)
                out += chunk
                m = re.search(rb"listening on [^\s]*:(\d+)", out)
                if m:
                    port = int(m.group(1))
        try:
            exchange(port)
        except Exception as e:  # noqa: BLE001 - any failure is reported the same way
            return f"FAILED: exchange: {e}", False
        p.send_signal(signal.SIGTERM)
        try:
            rc = p.wait(timeout=START_TIMEOUT)
        except subprocess.TimeoutExpired:
            return "FAILED: did not exit within 60 s of SIGTERM", False
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    text = open(vlog, errors="replace").read()

    def lost(kind):
        m = re.search(kind + r" lost: ([\d,]+) bytes in ([\d,]+) blocks", text)
        return int(m.group(1).replace(",", "")) if m else 0

    definite, indirect = lost("definitely"), lost("indirectly")
    errors = re.search(r"ERROR SUMMARY: (\d+) errors", text)
    errors = int(errors.group(1)) if errors else -1
    summary = f"exit {rc}, definitely lost {definite} B, indirectly lost {indirect} B, {errors} error(s)"
    if rc == 0 and definite == 0 and indirect == 0 and errors == 0:
        return "ok (" + summary + ")", True
    return f"FAILED ({summary}); see {vlog}", False


ok_all = True
for name, args, exchange in EXAMPLES:
    t0 = time.monotonic()
    result, ok = run(name, args, exchange)
    ok_all &= ok
    print(f"{name:<15} {time.monotonic() - t0:5.1f}s  {result}", flush=True)
sys.exit(0 if ok_all else 1)
PY
