#!/usr/bin/env python3
"""Writes the seed corpora of frame_codec_fuzz and heartbeat_fuzz.

Run from anywhere: python3 tests/fuzz/make_corpus.py. The files are small and
named after what they exercise; the fuzzers start from them (scripts/fuzz.sh
runs on a scratch copy, so the committed corpus does not grow in CI).
"""
import pathlib
import struct

HERE = pathlib.Path(__file__).resolve().parent / "corpus"
CONTROL = 0x8000_0000


def frame(payload: bytes, control: bool = False) -> bytes:
    return struct.pack(">I", len(payload) | (CONTROL if control else 0)) + payload


def hb(kind: int, flags: int = 0, seq: int = 0, ts: int = 0, magic=b"KLHB", version=1) -> bytes:
    return magic + struct.pack(">BBHQQ", version, kind, flags, seq, ts)


PING = hb(1, 0, 7, 123_456_789)
PONG = hb(2, 0, 7, 123_456_789)
GOAWAY = hb(3, 42)

# frame_codec input: byte 0 = maxFrame selector (255: 1 MiB, else *4),
# byte 1 = split seed, then the stream.
FRAME_CODEC = {
    "empty_frame": bytes([255, 0]) + frame(b""),
    "hello": bytes([255, 1]) + frame(b"hello"),
    "two_batched": bytes([255, 2]) + frame(b"one") + frame(b"two"),
    "ping_control": bytes([255, 3]) + frame(PING, True),
    "mixed": bytes([255, 4]) + frame(b"app") + frame(PONG, True) + frame(b"more") + frame(GOAWAY, True),
    "oversized_4gib": bytes([255, 5]) + b"\xff\xff\xff\xff" + b"garbage",
    "limit_exact": bytes([4, 6]) + frame(b"x" * 16),
    "limit_plus_one": bytes([4, 7]) + frame(b"x" * 16) + frame(b"y" * 17),
    "header_only": bytes([255, 8]) + struct.pack(">I", 10),
    "short_payload": bytes([255, 9]) + struct.pack(">I", 10) + b"abc",
    "half_header": bytes([255, 10]) + b"\x00\x00",
    "many_tiny": bytes([255, 11]) + b"".join(frame(bytes([i])) for i in range(40)),
    "control_empty": bytes([255, 12]) + frame(b"", True),
    "zero_limit": bytes([0, 13]) + frame(b"") + frame(b"a"),
}

HEARTBEAT = {
    "ping": PING,
    "pong": PONG,
    "goaway_code": GOAWAY,
    "ping_max_fields": hb(1, 0xFFFF, 2**64 - 1, 2**64 - 1),
    "bad_magic": hb(1, magic=b"KLHX"),
    "bad_version": hb(1, version=2),
    "type_zero": hb(0),
    "type_four": hb(4),
    "short_23": PING[:23],
    "long_25": PING + b"\x00",
    "empty": b"",
    "two_pings": PING + PING,
}


def main() -> None:
    for name, seeds in (("frame_codec", FRAME_CODEC), ("heartbeat", HEARTBEAT)):
        d = HERE / name
        d.mkdir(parents=True, exist_ok=True)
        for key, data in seeds.items():
            (d / key).write_bytes(data)
        print(f"{d}: {len(seeds)} files")


if __name__ == "__main__":
    main()
