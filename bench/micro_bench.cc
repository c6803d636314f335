// Micro-benchmarks of keel's byte path: keel::Buffer and the frame codec's
// header format, without sockets in the way unless the benchmark is about
// the socket.
//
//   BufferAppendRetrieve/N    append N bytes, then retrieve them (a reused
//                             buffer: steady state, no allocation)
//   BufferReadFrom/N          write N bytes into a socketpair, then one
//                             Buffer::readFrom on the other end into an owned
//                             buffer (spare room first, then the scratch area)
//   BufferReadFromBorrowed/N  the same, but the buffer borrows the scratch
//                             area first, as a connection with empty input
//                             does, and settles afterwards (no copy)
//   RawRead/N                 the baseline for the two above: write N bytes,
//                             one read() into a plain array
//   FrameEncode/N             FrameCodec::encodeHeader + the header and an
//                             N-byte payload appended to a Buffer
//   FrameDecode/N             64 whole frames of N payload bytes lent to a
//                             Buffer (borrow), parsed with peekU32BE +
//                             retrieve, as FrameCodec::onData does
//   FrameDecodeChunked/N      the same stream delivered in 1448-byte chunks
//                             (one loopback MSS), so frames straddle reads:
//                             the leftover is kept in owned storage (settle)
//                             and the next chunk appended behind it
//   GroupBroadcast/N          ConnectionGroup::broadcast of a 64-byte message
//                             to N framed members on the caller's loop (the
//                             in-memory transport: the cost is keel's, from
//                             the group walk to the bytes handed to the
//                             transport); items/s are member deliveries
//
// Bytes/s and items/s (frames or reads) are reported per benchmark.
#include <benchmark/benchmark.h>

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include <memory>
#include <string>

#include "keel/core/EventLoop.h"
#include "keel/core/LoopClock.h"
#include "keel/net/Buffer.h"
#include "keel/net/ConnectionGroup.h"
#include "keel/net/EmbeddedConnection.h"
#include "keel/net/FrameCodec.h"

namespace {

using keel::Buffer;
using keel::FrameCodec;

constexpr std::size_t kScratch = 64 * 1024;  // like a loop's scratch area
constexpr std::size_t kReadLimit = 256 * 1024;

std::vector<char> payload(std::size_t n) {
  std::vector<char> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<char>('a' + i % 26);
  return v;
}

std::size_t argSize(const benchmark::State& state) { return static_cast<std::size_t>(state.range(0)); }

// ---- Buffer -------------------------------------------------------------------

void BufferAppendRetrieve(benchmark::State& state) {
  const std::size_t n = argSize(state);
  const auto data = payload(n);
  Buffer buf;
  for (auto _ : state) {
    buf.append(data.data(), n);
    benchmark::DoNotOptimize(buf.peek());
    buf.retrieve(n);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * state.range(0));
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}

// A connected AF_UNIX stream pair, closed on scope exit.
struct SocketPair {
  int fds[2] = {-1, -1};
  SocketPair() {
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) fds[0] = fds[1] = -1;
  }
  ~SocketPair() {
    for (int fd : fds)
      if (fd >= 0) ::close(fd);
  }
  SocketPair(const SocketPair&) = delete;
  SocketPair& operator=(const SocketPair&) = delete;
  [[nodiscard]] bool ok() const noexcept { return fds[0] >= 0; }
};

bool writeAll(int fd, const char* p, std::size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

enum class ReadMode { Owned, Borrowed };

template <ReadMode mode>
void BufferReadFrom(benchmark::State& state) {
  const std::size_t n = argSize(state);
  const auto data = payload(n);
  SocketPair sp;
  if (!sp.ok()) {
    state.SkipWithError("socketpair failed");
    return;
  }
  std::vector<char> scratch(kScratch);
  Buffer buf;
  for (auto _ : state) {
    if (!writeAll(sp.fds[1], data.data(), n)) {
      state.SkipWithError("write failed");
      break;
    }
    std::size_t got = 0;
    while (got < n) {
      ssize_t r = 0;
      if constexpr (mode == ReadMode::Borrowed) {
        // A connection with empty input lends its loop's scratch area to the
        // buffer and reads straight into it.
        if (buf.empty()) buf.borrow(std::span<char>(scratch.data(), scratch.size()));
        r = buf.readFrom(sp.fds[0], std::span<char>(), kReadLimit);
      } else {
        r = buf.readFrom(sp.fds[0], std::span<char>(scratch.data(), scratch.size()), kReadLimit);
      }
      if (r <= 0) break;
      got += static_cast<std::size_t>(r);
    }
    if (got != n) {
      state.SkipWithError("short read");
      break;
    }
    benchmark::DoNotOptimize(buf.peek());
    buf.retrieveAll();
    if constexpr (mode == ReadMode::Borrowed) buf.settle();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * state.range(0));
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}

void RawRead(benchmark::State& state) {
  const std::size_t n = argSize(state);
  const auto data = payload(n);
  SocketPair sp;
  if (!sp.ok()) {
    state.SkipWithError("socketpair failed");
    return;
  }
  std::vector<char> scratch(kScratch);
  for (auto _ : state) {
    if (!writeAll(sp.fds[1], data.data(), n)) {
      state.SkipWithError("write failed");
      break;
    }
    std::size_t got = 0;
    while (got < n) {
      const ssize_t r = ::read(sp.fds[0], scratch.data(), scratch.size());
      if (r <= 0) break;
      got += static_cast<std::size_t>(r);
    }
    if (got != n) {
      state.SkipWithError("short read");
      break;
    }
    benchmark::DoNotOptimize(scratch.data());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * state.range(0));
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}

// ---- frame codec ----------------------------------------------------------------

void FrameEncode(benchmark::State& state) {
  const std::size_t n = argSize(state);
  const auto data = payload(n);
  Buffer out;
  for (auto _ : state) {
    char header[FrameCodec::kHeaderBytes];
    FrameCodec::encodeHeader(static_cast<std::uint32_t>(n), header);
    out.append(header, sizeof header);
    out.append(data.data(), n);
    benchmark::DoNotOptimize(out.peek());
    out.retrieveAll();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(n + FrameCodec::kHeaderBytes));
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}

constexpr std::size_t kFramesPerBatch = 64;

// kFramesPerBatch frames of n payload bytes, back to back, as on the wire.
std::vector<char> encodedStream(std::size_t n) {
  const auto body = payload(n);
  std::vector<char> stream;
  stream.reserve(kFramesPerBatch * (n + FrameCodec::kHeaderBytes));
  for (std::size_t i = 0; i < kFramesPerBatch; ++i) {
    char header[FrameCodec::kHeaderBytes];
    FrameCodec::encodeHeader(static_cast<std::uint32_t>(n), header);
    stream.insert(stream.end(), header, header + sizeof header);
    stream.insert(stream.end(), body.begin(), body.end());
  }
  return stream;
}

// The parsing loop of FrameCodec::onData: whole frames are consumed, a
// partial one is left for the next read. Returns the frames consumed.
std::size_t parseFrames(Buffer& in) {
  std::size_t frames = 0;
  while (in.readableBytes() >= FrameCodec::kHeaderBytes) {
    const std::uint32_t len = in.peekU32BE() & ~FrameCodec::kControlBit;
    if (in.readableBytes() < FrameCodec::kHeaderBytes + len) break;
    benchmark::DoNotOptimize(in.peek() + FrameCodec::kHeaderBytes);
    in.retrieve(FrameCodec::kHeaderBytes + len);
    ++frames;
  }
  return frames;
}

void FrameDecode(benchmark::State& state) {
  auto stream = encodedStream(argSize(state));
  Buffer in;
  std::size_t frames = 0;
  for (auto _ : state) {
    in.borrow(std::span<char>(stream.data(), stream.size()));
    in.hasWritten(stream.size());
    frames += parseFrames(in);
    in.settle();
  }
  if (frames != kFramesPerBatch * static_cast<std::size_t>(state.iterations()))
    state.SkipWithError("frames lost");
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(stream.size()));
  state.SetItemsProcessed(static_cast<std::int64_t>(frames));
}

void FrameDecodeChunked(benchmark::State& state) {
  constexpr std::size_t kChunk = 1448;
  auto stream = encodedStream(argSize(state));
  Buffer in;
  std::size_t frames = 0;
  for (auto _ : state) {
    for (std::size_t off = 0; off < stream.size(); off += kChunk) {
      const std::size_t len = std::min(kChunk, stream.size() - off);
      if (in.empty()) {  // a connection reads into the borrowed scratch area
        in.borrow(std::span<char>(stream.data() + off, len));
        in.hasWritten(len);
      } else {  // leftover of a partial frame: the chunk lands behind it
        in.append(stream.data() + off, len);
      }
      frames += parseFrames(in);
      in.settle();
    }
  }
  if (frames != kFramesPerBatch * static_cast<std::size_t>(state.iterations()))
    state.SkipWithError("frames lost");
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(stream.size()));
  state.SetItemsProcessed(static_cast<std::int64_t>(frames));
}

BENCHMARK(BufferAppendRetrieve)->Arg(64)->Arg(16384);
BENCHMARK(BufferReadFrom<ReadMode::Owned>)->Name("BufferReadFrom")->Arg(64)->Arg(16384);
BENCHMARK(BufferReadFrom<ReadMode::Borrowed>)->Name("BufferReadFromBorrowed")->Arg(64)->Arg(16384);
BENCHMARK(RawRead)->Arg(64)->Arg(16384);
BENCHMARK(FrameEncode)->Arg(64)->Arg(1024);
BENCHMARK(FrameDecode)->Arg(64)->Arg(1024);
BENCHMARK(FrameDecodeChunked)->Arg(64)->Arg(1024);

}  // namespace

void GroupBroadcast(benchmark::State& state) {
  using namespace keel;
  const auto members = static_cast<std::size_t>(state.range(0));
  ManualClock clock;
  EventLoop loop(LoopOptions{.clock = &clock});
  ConnectionGroup group;
  std::vector<std::unique_ptr<EmbeddedConnection>> conns;
  for (std::size_t i = 0; i < members; ++i) {
    auto ec = std::make_unique<EmbeddedConnection>(loop, ConnectionOptions{}, i + 1);
    ec->pipeline().emplaceLast<FrameCodec>();
    (void)group.join(ec->connection());
    ec->start();
    conns.push_back(std::move(ec));
  }
  const std::string message(64, 'm');
  std::size_t sinceDrain = 0;
  for (auto _ : state) {
    group.broadcast(message);
    if (++sinceDrain == 256) {  // the transport keeps what it was given: empty it now and then
      state.PauseTiming();
      for (auto& c : conns) benchmark::DoNotOptimize(c->takeOutput());
      sinceDrain = 0;
      state.ResumeTiming();
    }
  }
  if (group.stats().delivered != members * static_cast<std::uint64_t>(state.iterations()))
    state.SkipWithError("deliveries lost");
  state.SetItemsProcessed(static_cast<std::int64_t>(members) * static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(GroupBroadcast)->Arg(1)->Arg(100)->Arg(1000);

BENCHMARK_MAIN();
