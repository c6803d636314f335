// The arithmetic of HeartbeatSchedule.h: no loop, no I/O.
#include "keel/heartbeat/HeartbeatSchedule.h"

#include <algorithm>
#include <random>

namespace keel {
namespace {

HeartbeatOptions normalised(HeartbeatOptions o) noexcept {
  o.keepaliveTime = std::max(o.keepaliveTime, milliseconds::zero());
  o.probeInterval = std::max(o.probeInterval, milliseconds::zero());
  o.probeCount = std::max(o.probeCount, 0);
  o.jitterPercent = std::clamp(o.jitterPercent, 0, 100);
  return o;
}

Duration maxJitter(const HeartbeatOptions& o) noexcept {
  const Duration::rep ns = Duration(o.keepaliveTime).count();
  const Duration::rep pct = o.jitterPercent;
  // ns * pct / 100 without the product overflowing for long keepalive times.
  return Duration(ns / 100 * pct + ns % 100 * pct / 100);
}

// One generator per thread (a loop's connections all draw from their loop's
// thread). std::random_device may throw where no entropy source exists; the
// jitter only has to spread connections out, so the clock will do then.
std::mt19937_64& jitterEngine() {
  thread_local std::mt19937_64 engine = [] {
    std::uint64_t seed = static_cast<std::uint64_t>(Clock::now().time_since_epoch().count());
    try {
      std::random_device rd;
      seed ^= (std::uint64_t{rd()} << 32) | rd();
    } catch (...) {
    }
    return std::mt19937_64(seed);
  }();
  return engine;
}

}  // namespace

// ---- HeartbeatSchedule --------------------------------------------------------
HeartbeatSchedule::HeartbeatSchedule(HeartbeatOptions options) noexcept : options_(normalised(options)) {}

Duration HeartbeatSchedule::drawJitter() const {
  const Duration limit = maxJitter(options_);
  if (limit <= Duration::zero()) return Duration::zero();
  std::uniform_int_distribution<Duration::rep> dist(0, limit.count());
  return Duration(dist(jitterEngine()));
}

void HeartbeatSchedule::start(TimePoint now, Duration jitter) noexcept {
  jitter_ = std::clamp(jitter, Duration::zero(), maxJitter(options_));
  since_ = now;
  lastPing_ = now;
  probes_ = 0;
  awaiting_ = false;
  const Duration sampleEvery = options_.rttSampleInterval;
  Duration sampleJitter{};
  if (const Duration limit = maxJitter(options_); limit > Duration::zero()) {
    // The same share of the sample interval as jitter_ is of its limit, in
    // floating point: the product of two nanosecond counts could overflow.
    const long double share =
        static_cast<long double>(jitter_.count()) / static_cast<long double>(limit.count());
    const long double samplePart =
        static_cast<long double>(sampleEvery.count()) * options_.jitterPercent / 100;
    sampleJitter = Duration(static_cast<Duration::rep>(samplePart * share));
  }
  nextSample_ = now + sampleEvery - sampleJitter;
}

Duration HeartbeatSchedule::firstDelay() const noexcept {
  const Duration live = pingDue(0);
  if (!sampling()) return live;
  return std::max(std::min(live, nextSample_ - since_), Duration(1));
}

HeartbeatSchedule::Step HeartbeatSchedule::liveness(TimePoint now, TimePoint lastHeard) noexcept {
  if (lastHeard > since_) {  // the peer spoke since: a new silent spell
    since_ = lastHeard;
    probes_ = 0;
  }
  const Duration silent = now - since_;
  const Duration interval = options_.probeInterval;
  const Duration deadAfter = options_.deadAfter();

  if (probes_ < options_.probeCount) {
    const Duration due = pingDue(probes_);
    if (silent < due) return {Action::Wait, due - silent};
    // One PING covers every probe that is due: when the loop stalled past
    // several of them, a burst of PINGs would carry no more information.
    ++probes_;
    while (probes_ < options_.probeCount && pingDue(probes_) <= silent) ++probes_;
    lastPing_ = now;
    sent(now);
    const Duration next =
        probes_ < options_.probeCount ? pingDue(probes_) - silent : std::max(deadAfter - silent, interval);
    return {Action::Ping, std::max(next, Duration(1))};
  }

  // Every PING is out. Dead once the silence reached deadAfter and the last
  // PING has had a whole interval to be answered.
  const Duration sincePing = now - lastPing_;
  const bool answered = options_.probeCount == 0 || sincePing >= interval;
  if (silent >= deadAfter && answered) return {Action::Dead, Duration::zero()};
  return {Action::Wait, std::max({deadAfter - silent, interval - sincePing, Duration(1)})};
}

HeartbeatSchedule::Step HeartbeatSchedule::onTimer(TimePoint now, TimePoint lastHeard) noexcept {
  Step step = liveness(now, lastHeard);
  if (!sampling() || step.action == Action::Dead) return step;
  // Slots stay on a fixed grid, so a timer that runs a tick late does not
  // slow the rate down; slots a stalled loop missed are dropped, not caught
  // up in a burst.
  const Duration every = options_.rttSampleInterval;
  const bool slotDue = now >= nextSample_;
  if (slotDue) {
    const auto missed = (now - nextSample_) / every;
    nextSample_ += every * (missed + 1);
  }
  if (step.action == Action::Wait && slotDue) {
    if (outstanding(now)) {
      ++skipped_;
    } else {
      sent(now);
      ++samples_;
      step.action = Action::Ping;
      step.sample = true;
    }
  }
  // A liveness PING that goes out measures the RTT as well; the slot it
  // shares is not sent twice.
  step.next = std::max(std::min(step.next, nextSample_ - now), Duration(1));
  return step;
}

// ---- RttEstimate ----------------------------------------------------------------
void RttEstimate::add(Duration sample) noexcept {
  last = sample;
  if (samples++ == 0) {
    smoothed = sample;
    variance = sample / 2;
    return;
  }
  const Duration err = smoothed > sample ? smoothed - sample : sample - smoothed;
  variance = variance - variance / 4 + err / 4;
  smoothed = smoothed - smoothed / 8 + sample / 8;
}

}  // namespace keel
