// The heartbeat's pure parts, without a loop or a socket: the wire format
// (HeartbeatMessage) and the probing schedule (HeartbeatSchedule) on
// synthetic time.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "heartbeat/HeartbeatWatch.h"
#include "keel/heartbeat/Heartbeat.h"
#include "keel/heartbeat/HeartbeatMessage.h"
#include "support/TestNet.h"

namespace keel {
namespace {

using namespace std::chrono_literals;
using test::frameOf;

// ---- 1. wire format -----------------------------------------------------------------

TEST(HeartbeatMessage, EncodesTheDocumentedBigEndianLayout) {
  const HeartbeatMessage m{HeartbeatType::Pong, 0xA1B2, 0x0102030405060708ull, 0x1112131415161718ull};
  char body[HeartbeatMessage::kBodyBytes];
  m.encode(body);
  const unsigned char expect[24] = {'K', 'L', 'H', 'B', 1,    2,    0xA1, 0xB2, 1,    2,    3,    4,
                                    5,   6,   7,   8,   0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18};
  EXPECT_EQ(std::memcmp(body, expect, sizeof expect), 0);

  char frame[HeartbeatMessage::kFrameBytes];
  m.encodeFrame(frame);
  const unsigned char header[4] = {0x80, 0, 0, 24};  // control bit + length 24
  EXPECT_EQ(std::memcmp(frame, header, 4), 0);
  EXPECT_EQ(std::memcmp(frame + 4, expect, sizeof expect), 0);
}

TEST(HeartbeatMessage, RoundTripsEveryTypeAndPongEchoesPing) {
  const TimePoint t = Clock::now();
  for (const HeartbeatMessage& m :
       {HeartbeatMessage::ping(42, t), HeartbeatMessage::pongFor(HeartbeatMessage::ping(7, t)),
        HeartbeatMessage::goAway(0xBEEF), HeartbeatMessage{HeartbeatType::Ping, 0xFFFF, ~0ull, ~0ull}}) {
    char body[HeartbeatMessage::kBodyBytes];
    m.encode(body);
    const auto back = HeartbeatMessage::decode(std::span<const char>(body, sizeof body));
    ASSERT_TRUE(back.has_value()) << toString(m.type);
    EXPECT_EQ(*back, m);
  }
  const HeartbeatMessage ping = HeartbeatMessage::ping(9, t);
  const HeartbeatMessage pong = HeartbeatMessage::pongFor(ping);
  EXPECT_EQ(pong.type, HeartbeatType::Pong);
  EXPECT_EQ(pong.sequence, 9u);
  EXPECT_EQ(pong.timestamp, ping.timestamp);
  EXPECT_EQ(HeartbeatMessage::unstamp(ping.timestamp), t);
}

TEST(HeartbeatMessage, RejectsWrongSizeMagicVersionTypeAndGarbage) {
  char good[HeartbeatMessage::kBodyBytes];
  HeartbeatMessage::ping(1, Clock::now()).encode(good);
  const std::string valid(good, sizeof good);
  ASSERT_TRUE(HeartbeatMessage::decode(valid).has_value());

  auto decodes = [](std::string s) { return HeartbeatMessage::decode(std::span<const char>(s)).has_value(); };
  EXPECT_FALSE(decodes(""));
  EXPECT_FALSE(decodes(valid.substr(0, 23)));
  EXPECT_FALSE(decodes(valid + "x"));
  EXPECT_FALSE(decodes(frameOf(valid, true)));  // the frame, not the body
  for (int i = 0; i < 4; ++i) {
    std::string s = valid;
    auto& c = s[static_cast<std::size_t>(i)];
    c = static_cast<char>(c ^ 0x20);  // "kLHB", "KlHB"...
    EXPECT_FALSE(decodes(s)) << "magic byte " << i;
  }
  for (int version : {0, 2, 255}) {
    std::string s = valid;
    s[4] = static_cast<char>(version);
    EXPECT_FALSE(decodes(s)) << "version " << version;
  }
  for (int type : {0, 4, 128, 255}) {
    std::string s = valid;
    s[5] = static_cast<char>(type);
    EXPECT_FALSE(decodes(s)) << "type " << type;
  }
  int accepted = 0;
  for (std::uint32_t seed = 1; seed <= 2000; ++seed) accepted += decodes(test::randomBytes(24, seed)) ? 1 : 0;
  EXPECT_EQ(accepted, 0) << "random 24-byte garbage passed for a heartbeat";
}

// ---- the schedule, on synthetic time ------------------------------------------------

// Fires the schedule's timer the way a loop would (exactly on time) until it
// says Dead or `limit` passes; returns the fire times (offsets from t0) and actions.
struct Fired {
  milliseconds at;
  HeartbeatSchedule::Action action;
};
std::vector<Fired> drive(HeartbeatSchedule& s, TimePoint t0,
                         const std::function<TimePoint(TimePoint)>& lastHeard, milliseconds limit = 60s) {
  std::vector<Fired> out;
  TimePoint t = t0 + s.firstDelay();
  while (t - t0 <= limit) {
    const auto step = s.onTimer(t, lastHeard(t));
    out.push_back({std::chrono::duration_cast<milliseconds>(t - t0), step.action});
    if (step.action == HeartbeatSchedule::Action::Dead) break;
    t += step.next;
  }
  return out;
}

using A = HeartbeatSchedule::Action;

TEST(HeartbeatSchedule, PingsAtKeepaliveThenEveryIntervalThenDeadAtKeepalivePlusCountIntervals) {
  HeartbeatSchedule s({.keepaliveTime = 1000ms, .probeInterval = 200ms, .probeCount = 3, .jitterPercent = 0});
  const TimePoint t0{};
  s.start(t0, 0ms);
  const auto fired = drive(s, t0, [&](TimePoint) { return t0; });
  ASSERT_EQ(fired.size(), 4u);
  EXPECT_EQ(fired[0].at, 1000ms);
  EXPECT_EQ(fired[1].at, 1200ms);
  EXPECT_EQ(fired[2].at, 1400ms);
  EXPECT_EQ(fired[3].at, 1600ms);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(fired[static_cast<std::size_t>(i)].action, A::Ping);
  EXPECT_EQ(fired[3].action, A::Dead);
  const HeartbeatOptions o{
      .keepaliveTime = 1000ms, .probeInterval = 200ms, .probeCount = 3, .jitterPercent = 0};
  EXPECT_EQ(s.silence(t0 + 1600ms), o.deadAfter());
}

TEST(HeartbeatSchedule, ActivityOnlyMovesTheNextExpiryNeverTheTimer) {
  HeartbeatSchedule s({.keepaliveTime = 1000ms, .probeInterval = 200ms, .probeCount = 3, .jitterPercent = 0});
  const TimePoint t0{};
  s.start(t0, 0ms);
  // Traffic every 10 ms for 5 s: the timer fires once per keepalive, never pings.
  const auto fired = drive(
      s, t0, [&](TimePoint t) { return t0 + (t - t0) / 10ms * 10ms; }, 5000ms);
  ASSERT_FALSE(fired.empty());
  EXPECT_LE(fired.size(), 6u);
  for (const auto& f : fired) EXPECT_EQ(f.action, A::Wait);

  // Heard at 400 ms: the first expiry re-arms for the 400 ms remainder.
  s.start(t0, 0ms);
  const auto step = s.onTimer(t0 + 1000ms, t0 + 400ms);
  EXPECT_EQ(step.action, A::Wait);
  EXPECT_EQ(step.next, 400ms);
}

TEST(HeartbeatSchedule, AnAnswerStartsANewSilentSpell) {
  HeartbeatSchedule s({.keepaliveTime = 1000ms, .probeInterval = 200ms, .probeCount = 3, .jitterPercent = 0});
  const TimePoint t0{};
  s.start(t0, 0ms);
  EXPECT_EQ(s.onTimer(t0 + 1000ms, t0).action, A::Ping);
  EXPECT_EQ(s.onTimer(t0 + 1200ms, t0).action, A::Ping);
  EXPECT_EQ(s.probesOut(), 2);
  // The PONG came at 1250 ms: no probe is out any more, next PING 1 s later.
  const auto step = s.onTimer(t0 + 1400ms, t0 + 1250ms);
  EXPECT_EQ(step.action, A::Wait);
  EXPECT_EQ(step.next, 850ms);
  EXPECT_EQ(s.probesOut(), 0);
}

TEST(HeartbeatSchedule, AStalledLoopSendsOnePingAndGivesItAFullInterval) {
  HeartbeatSchedule s({.keepaliveTime = 1000ms, .probeInterval = 200ms, .probeCount = 3, .jitterPercent = 0});
  const TimePoint t0{};
  s.start(t0, 0ms);
  // The loop was blocked until 1900 ms, past the dead time: one PING, not death.
  const auto late = s.onTimer(t0 + 1900ms, t0);
  EXPECT_EQ(late.action, A::Ping);
  EXPECT_EQ(s.probesOut(), 3);
  EXPECT_EQ(late.next, 200ms);
  EXPECT_EQ(s.onTimer(t0 + 2100ms, t0).action, A::Dead);
}

TEST(HeartbeatSchedule, JitterOnlyBringsTheFirstPingForwardWithinItsShare) {
  HeartbeatOptions o{.keepaliveTime = 1000ms, .probeInterval = 200ms, .probeCount = 3, .jitterPercent = 10};
  HeartbeatSchedule s(o);
  std::set<Duration::rep> seen;
  for (int i = 0; i < 1000; ++i) {
    const Duration j = s.drawJitter();
    ASSERT_GE(j, 0ms);
    ASSERT_LE(j, 100ms);
    seen.insert(std::chrono::duration_cast<milliseconds>(j).count());
  }
  EXPECT_GT(seen.size(), 50u) << "jitter draws are not spread";
  const TimePoint t0{};
  s.start(t0, 5s);  // clamped to 10 % of 1 s
  EXPECT_EQ(s.jitter(), 100ms);
  EXPECT_EQ(s.firstDelay(), 900ms);
  const auto fired = drive(s, t0, [&](TimePoint) { return t0; });
  ASSERT_EQ(fired.size(), 4u);
  EXPECT_EQ(fired[0].at, 900ms);
  EXPECT_EQ(fired[3].at, 1600ms) << "the dead time does not move with the jitter";
}

}  // namespace
}  // namespace keel
