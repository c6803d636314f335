// keel-chat: a line-based chat room. Every line a member sends goes to all
// the other members as "user<id>: <line>"; the sender gets no copy.
//
//   keel-chat --port 7003 [--idle-timeout-ms 60000] [--line-timeout-ms 30000]
//             [--max-line 4096] [--max-members 100]
//   try it from two terminals:  socat - TCP:127.0.0.1:7003
//
// What it shows: fan-out without unbounded memory. One member that stops
// reading must not make the server buffer everything the others say. Each
// connection's output queue has a high watermark (256 KiB here); while a
// member's queue is above it, messages for that member are DROPPED and
// counted, and once it has drained it is told how many it missed. Dropping
// rather than disconnecting: a chat line is worth less than the member's
// session, and a reader that is only briefly slow (a terminal scrolled back)
// keeps its seat. Memory stays bounded either way: at most about
// (256 KiB + one line) per member, times --max-members. Members silent for
// --idle-timeout-ms are kicked. The idle clock restarts at every byte, so a
// member trickling a byte at a time is never idle: a line begun must also
// end within --line-timeout-ms (MessageDeadline), or the member is closed.
// Lines are capped (--max-line; longer: an error line, then a close). One
// loop, no I/O threads: the room is plain data touched by one thread.
#include <chrono>
#include <csignal>
#include <cstdio>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include <keel/core/EventLoop.h>
#include <keel/heartbeat/IdleReaper.h>
#include <keel/heartbeat/MessageDeadline.h>
#include <keel/net/Buffer.h>
#include <keel/net/Server.h>
#include "../common/ExampleMain.h"

#include "LineSplitter.h"

namespace {

using namespace std::string_view_literals;

class Member;

// Who is in the room. Loop thread only.
struct Room {
  std::vector<Member*> members;
  std::size_t maxLine = 4096;
  std::uint64_t dropped = 0;  // messages not queued for members above their watermark
  void broadcast(const Member* from, const keel::Slices& msg);
  void leave(const Member* m) { std::erase(members, m); }
};

// The application handler: one per member connection.
class Member final : public keel::Handler {
 public:
  explicit Member(Room& room) : room_(room) {}

  // Queues `msg` unless this member is already above its high watermark.
  void deliver(const keel::Slices& msg) {
    keel::Connection& c = ctx_->connection();
    if (c.outputBytes() >= c.options().highWatermark) {
      ++missed_;
      ++room_.dropped;
      return;
    }
    ctx_->write(msg);
  }
  std::string_view name() const noexcept override { return "chat-member"; }

  void onConnected(keel::HandlerContext& ctx) override {
    ctx_ = &ctx;
    name_ = "user" + std::to_string(ctx.connection().id());
    const std::string hello =
        "*** you are " + name_ + "; " + std::to_string(room_.members.size()) + " other(s) here\n";
    ctx.write(hello);
    room_.broadcast(this, {"*** " + name_ + " joined\n"});
    room_.members.push_back(this);
  }
  void onData(keel::HandlerContext& ctx, keel::Buffer& in) override {
    for (;;) {
      const auto r = keel::chat::nextLine(in.view(), room_.maxLine);
      if (r.status == keel::chat::LineStatus::Incomplete) return;
      if (r.status == keel::chat::LineStatus::TooLong) {
        ctx.write("*** error: line longer than " + std::to_string(room_.maxLine) + " bytes; bye\n");
        in.retrieveAll();
        return ctx.close(keel::CloseReason::ProtocolError);  // flushes the error line first
      }
      // Four slices, no copy: "name", ": ", the line (still in the input
      // buffer), "\n". Each member's connection copies them into its queue.
      if (!r.line.empty()) room_.broadcast(this, {std::string_view(name_), ": "sv, r.line, "\n"sv});
      in.retrieve(r.consumed);
    }
  }
  void onUserEvent(keel::HandlerContext& ctx, const keel::UserEvent& ev) override {
    if (const auto* idle = dynamic_cast<const keel::IdleEvent*>(&ev)) {
      const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(idle->idleFor).count();
      ctx.write("*** idle for " + std::to_string(ms) + " ms; bye\n");
      ctx.close(keel::CloseReason::IdleTimeout);
    }
  }
  void onWritable(keel::HandlerContext& ctx) override {  // drained to the low watermark
    if (missed_ == 0) return;
    ctx.write("*** you missed " + std::to_string(missed_) + " message(s): reading too slowly\n");
    missed_ = 0;
  }
  void onClosed(keel::HandlerContext& ctx, keel::CloseReason reason) override {
    room_.leave(this);
    if (ctx_ != nullptr)
      room_.broadcast(this, {"*** " + name_ + " left (" + std::string(toString(reason)) + ")\n"});
    ctx.fireClosed(reason);
  }

 private:
  Room& room_;
  keel::HandlerContext* ctx_ = nullptr;
  std::string name_;
  std::uint64_t missed_ = 0;
};

void Room::broadcast(const Member* from, const keel::Slices& msg) {
  // keel reports a failed write later (never inside write), so no member
  // leaves the vector while this loop runs.
  for (std::size_t i = 0; i < members.size(); ++i)
    if (members[i] != from) members[i]->deliver(msg);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"keel-chat: line-based chat room"};
  std::string host = "127.0.0.1";
  std::uint16_t port = 7003;
  std::int64_t idleMs = 60'000;
  std::int64_t lineMs = 30'000;
  Room room;
  keel::ServerOptions options;
  options.maxConnections = 100;
  app.add_option("--host", host, "address to bind (numeric IPv4)");
  app.add_option("--port", port, "TCP port (0 picks a free one)");
  app.add_option("--idle-timeout-ms", idleMs, "kick members silent this long; 0: never")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--line-timeout-ms", lineMs,
                 "close a member whose line is not finished this long after it began; 0: never")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--max-line", room.maxLine, "longest line accepted, bytes")->check(CLI::Range(1, 1 << 20));
  app.add_option("--max-members", options.maxConnections, "members at once")->check(CLI::Range(1, 10000));
  CLI11_PARSE(app, argc, argv);

  // The drop threshold is the high watermark; below the low one the member
  // hears how much it missed. A refused line or an idle kick is a normal
  // close with a FIN (not keel's default reset for protocol errors), so the
  // member gets to read the line that says why.
  options.connection.highWatermark = 256 << 10;
  options.connection.lowWatermark = 64 << 10;
  options.connection.resetOnReasons = keel::reasonBit(keel::CloseReason::HeartbeatTimeout);

  const auto addr = keel::SocketAddress::ipv4(host, port);
  if (!addr) {
    std::fprintf(stderr, "keel-chat: bad address %s\n", host.c_str());
    return 2;
  }
  keel::EventLoop loop;
  keel::Server server(loop, *addr, options);
  // SIGINT/SIGTERM: a graceful stop, then the loop quits (exit 0); a
  // second signal aborts whatever is still open.
  if (const std::error_code ec = server.stopOnSignals({SIGINT, SIGTERM})) {
    std::fprintf(stderr, "keel-chat: signals: %s\n", ec.message().c_str());
    return 1;
  }
  keel::IdleLimits idle;
  idle.reader = std::chrono::milliseconds(idleMs);  // silent: nothing received from the member
  const std::chrono::milliseconds lineLimit(lineMs);
  server.setPipelineInit([&room, idle, lineLimit](keel::Connection& c) {
    // Before Member, which leaves an unfinished line in the input: that
    // leftover starts the deadline's clock. At the deadline it closes the
    // member (IdleTimeout, a FIN here) with no goodbye line: the close comes
    // from before Member, which only sees onClosed.
    if (lineLimit.count() > 0) c.pipeline().emplaceLast<keel::MessageDeadline>(lineLimit);
    if (idle.any()) c.pipeline().emplaceLast<keel::IdleReaper>(idle);  // Notify: Member says bye
    c.pipeline().emplaceLast<Member>(room);
  });
  if (keel::example::startAndAnnounce(server, "keel-chat") != 0) return 1;
  loop.loop();
  std::fprintf(stderr, "keel-chat: %llu message(s) dropped for slow readers\n",
               static_cast<unsigned long long>(room.dropped));
  return 0;
}
