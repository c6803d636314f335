// The handler pipeline on real connections: event order through several
// handlers, outbound interception, handlers added and removed at run time
// (including from inside an event), typed lookup, the frame codec.
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <string>
#include <vector>

#include "keel/net/Buffer.h"
#include "keel/net/Connection.h"
#include "keel/net/FrameCodec.h"
#include "support/EventLog.h"
#include "support/TestNet.h"

namespace keel {
namespace {

using namespace std::chrono_literals;
using test::BlockingClient;
using test::ServerThread;

using Log = test::EventLog;

// Records every inbound event it sees, passes everything on.
class Recorder final : public Handler {
 public:
  Recorder(std::string tag, Log* log) : tag_(std::move(tag)), log_(log) {}
  std::string_view name() const noexcept override { return tag_; }
  void handlerAdded(HandlerContext&) override { log_->add(tag_ + ":added"); }
  void handlerRemoved(HandlerContext&) override { log_->add(tag_ + ":removed"); }
  void onConnected(HandlerContext& ctx) override {
    log_->add(tag_ + ":connected");
    ctx.fireConnected();
  }
  void onData(HandlerContext& ctx, Buffer& in) override {
    log_->add(tag_ + ":data");
    ctx.fireData(in);
  }
  void onPeerHalfClosed(HandlerContext& ctx, PeerFin& fin) override {
    log_->add(tag_ + ":fin");
    ctx.firePeerHalfClosed(fin);
  }
  void onClosed(HandlerContext& ctx, CloseReason r) override {
    log_->add(tag_ + ":closed:" + std::string(toString(r)));
    ctx.fireClosed(r);
  }
  std::error_code write(HandlerContext& ctx, const Slices& data) override {
    log_->add(tag_ + ":write");
    return ctx.write(data);
  }

 private:
  std::string tag_;
  Log* log_;
};

// Upper-cases everything written through it (outbound interception).
class Upper final : public Handler {
 public:
  std::error_code write(HandlerContext& ctx, const Slices& data) override {
    std::string s;
    for (auto part : data) s.append(part.data(), part.size());
    for (auto& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return ctx.write(s);
  }
};

class Echo final : public Handler {
 public:
  void onData(HandlerContext& ctx, Buffer& in) override {
    ctx.write(in.readable());
    in.retrieveAll();
  }
};

TEST(Pipeline, InboundHeadToTailOutboundTailToHeadAndCloseReasonReachesAll) {
  Log log;
  ServerThread srv(SocketAddress::loopback4(0), {}, [&](Connection& c) {
    c.pipeline().emplaceLast<Recorder>("a", &log);
    c.pipeline().emplaceLast<Upper>();
    c.pipeline().emplaceLast<Recorder>("b", &log);
    c.pipeline().emplaceLast<Echo>();
  });
  {
    BlockingClient client(srv.address());
    EXPECT_EQ(client.echo("hello"), "HELLO");
    client.shutdownWrite();
    bool eof = false;
    (void)client.recvUntilEof(&eof);
    EXPECT_TRUE(eof);
  }
  ASSERT_TRUE(test::eventually([&] { return log.get().size() >= 14; }));
  const std::vector<std::string> expect = {"a:added",
                                           "b:added",
                                           "a:connected",
                                           "b:connected",
                                           "a:data",
                                           "b:data",
                                           "b:write",
                                           "a:write",
                                           "a:fin",
                                           "b:fin",
                                           "a:closed:peer-closed",
                                           "b:closed:peer-closed",
                                           "a:removed",
                                           "b:removed"};
  EXPECT_EQ(log.get(), expect);
}

// Removes itself on the first data event and puts a different handler in its place.
class OneShotGreeter final : public Handler {
 public:
  void onData(HandlerContext& ctx, Buffer& in) override {
    ctx.write("greetings:");
    auto& pipeline = ctx.pipeline();
    pipeline.addBefore<Echo>(std::make_unique<Upper>());
    ctx.remove();      // the event in flight still finishes its walk
    ctx.fireData(in);  // ...to the echo, through nothing removed
  }
};

TEST(Pipeline, HandlersAddedAndRemovedAtRunTimeFromInsideAnEvent) {
  std::atomic<bool> greeterGone{false};
  std::atomic<bool> upperFound{false};
  struct Probe final : Handler {
    std::atomic<bool>* gone;
    std::atomic<bool>* upper;
    Probe(std::atomic<bool>* g, std::atomic<bool>* u) : gone(g), upper(u) {}
    void onData(HandlerContext& ctx, Buffer& in) override {
      *gone = ctx.pipeline().find<OneShotGreeter>() == nullptr;
      *upper = ctx.pipeline().find<Upper>() != nullptr;
      ctx.fireData(in);
    }
  };
  ServerThread srv(SocketAddress::loopback4(0), {}, [&](Connection& c) {
    c.pipeline().emplaceLast<OneShotGreeter>();
    c.pipeline().emplaceLast<Probe>(&greeterGone, &upperFound);
    c.pipeline().emplaceLast<Echo>();
  });
  BlockingClient client(srv.address());
  ASSERT_TRUE(client.sendAll("one"));
  // "greetings:" went out before Upper existed; the echo passed through it.
  EXPECT_EQ(client.recvExact(13), "greetings:ONE");
  ASSERT_TRUE(client.sendAll("two"));
  EXPECT_EQ(client.recvExact(3), "TWO");
  EXPECT_TRUE(greeterGone.load());
  EXPECT_TRUE(upperFound.load());
}

class FrameEcho final : public Handler {
 public:
  void onFrame(HandlerContext& ctx, std::span<const char> frame) override { ctx.writeFrame(frame); }
};

std::string frame(std::string_view payload) {
  char h[4];
  FrameCodec::encodeHeader(static_cast<std::uint32_t>(payload.size()), h);
  return std::string(h, 4) + std::string(payload);
}

TEST(FrameCodec, FramesSplitAndBatchedArbitrarilyAreReassembled) {
  ServerThread srv(SocketAddress::loopback4(0), {}, [](Connection& c) {
    c.pipeline().emplaceLast<FrameCodec>();
    c.pipeline().emplaceLast<FrameEcho>();
  });
  BlockingClient client(srv.address());
  client.setNoDelay(true);
  std::string stream;
  for (int i = 0; i < 200; ++i)
    stream +=
        frame(test::randomBytes(static_cast<std::size_t>(i * 37 % 5000), static_cast<std::uint32_t>(i)));
  stream += frame("");  // empty frames are frames too
  // Dribble it in uneven pieces so headers and payloads straddle reads.
  std::size_t pos = 0, step = 1;
  std::string back;
  while (pos < stream.size()) {
    const std::size_t n = std::min(step, stream.size() - pos);
    ASSERT_TRUE(client.sendAll(std::string_view(stream).substr(pos, n)));
    pos += n;
    step = step * 3 % 9973 + 1;
  }
  back = client.recvExact(stream.size());
  EXPECT_TRUE(back == stream);
}

TEST(FrameCodec, OversizedLengthIsRefusedWithProtocolErrorWithoutAllocating) {
  std::atomic<int> reason{-1};
  struct Watch final : Handler {
    std::atomic<int>* r;
    explicit Watch(std::atomic<int>* rr) : r(rr) {}
    void onClosed(HandlerContext& ctx, CloseReason why) override {
      *r = static_cast<int>(why);
      ctx.fireClosed(why);
    }
  };
  Connection::Ptr conn;
  ServerThread srv(SocketAddress::loopback4(0), {}, [&](Connection& c) {
    conn = c.shared_from_this();
    c.pipeline().emplaceLast<Watch>(&reason);
    c.pipeline().emplaceLast<FrameCodec>(64 << 10);
    c.pipeline().emplaceLast<FrameEcho>();
  });
  BlockingClient client(srv.address());
  EXPECT_EQ(client.echo(frame("fine")), frame("fine"));
  ASSERT_TRUE(client.sendAll(std::string("\xff\xff\xff\xff", 4) + "garbage"));  // says 4 GiB
  bool eof = false;
  (void)client.recvUntilEof(&eof);
  EXPECT_TRUE(
      test::eventually([&] { return reason.load() == static_cast<int>(CloseReason::ProtocolError); }));
  std::size_t inputCapacity = 1;
  srv.runAndWait([&] {
    inputCapacity = conn->input().capacity();
    conn.reset();
  });
  EXPECT_LT(inputCapacity, 1u << 20) << "nothing near the announced size was allocated";
}

TEST(Pipeline, TypedLookupReachesPerConnectionState) {
  struct Counter final : Handler {
    int bytes = 0;
    void onData(HandlerContext& ctx, Buffer& in) override {
      bytes += static_cast<int>(in.readableBytes());
      ctx.fireData(in);
    }
  };
  Connection::Ptr conn;
  ServerThread srv(SocketAddress::loopback4(0), {}, [&](Connection& c) {
    conn = c.shared_from_this();
    c.pipeline().emplaceLast<Counter>();
    c.pipeline().emplaceLast<Echo>();
  });
  BlockingClient client(srv.address());
  EXPECT_EQ(client.echo("12345"), "12345");
  int bytes = -1;
  std::vector<std::string_view> names;
  srv.runAndWait([&] {
    bytes = conn->pipeline().find<Counter>()->bytes;
    EXPECT_EQ(conn->pipeline().find<FrameCodec>(), nullptr);
    EXPECT_EQ(conn->pipeline().size(), 2u);
    conn.reset();
  });
  EXPECT_EQ(bytes, 5);
}

TEST(Connection, WriteCoalescingSendsOneSegmentPerIteration) {
  struct Chatty final : Handler {
    void onData(HandlerContext& ctx, Buffer& in) override {
      for (char c : in.view()) ctx.write(std::string_view(&c, 1));  // many tiny writes
      in.retrieveAll();
    }
  };
  Connection::Ptr conn;
  ServerThread srv(SocketAddress::loopback4(0), {}, [&](Connection& c) {
    conn = c.shared_from_this();
    c.setWriteCoalescing(true);
    c.pipeline().emplaceLast<Chatty>();
  });
  BlockingClient client(srv.address());
  EXPECT_EQ(client.echo("abcdefghij"), "abcdefghij");
  std::uint64_t writes = 0;
  srv.runAndWait([&] {
    writes = conn->stats().writes;
    conn.reset();
  });
  EXPECT_EQ(writes, 1u) << "ten writes in one iteration must leave as one send";
}

TEST(Connection, StatsAndTcpInfo) {
  Connection::Ptr conn;
  ServerThread srv(SocketAddress::loopback4(0), {}, [&](Connection& c) {
    conn = c.shared_from_this();
    c.pipeline().emplaceLast<Echo>();
  });
  BlockingClient client(srv.address());
  for (int i = 0; i < 20; ++i) ASSERT_EQ(client.echo("ping"), "ping");
  srv.runAndWait([&] {
    EXPECT_EQ(conn->stats().bytesIn, 80u);
    EXPECT_EQ(conn->stats().bytesOut, 80u);
    EXPECT_EQ(conn->state(), ConnectionState::Open);
    auto info = conn->tcpInfo();
    ASSERT_TRUE(info.has_value());
    EXPECT_EQ(info->state, 1);  // TCP_ESTABLISHED
    EXPECT_GT(info->rtt.count(), 0);
    EXPECT_EQ(conn->peerAddress(), client.localAddress());
    conn.reset();
  });
}

}  // namespace
}  // namespace keel
