#include "PresenceServer.h"

#include <cstdio>
#include <string_view>

#include <keel/heartbeat/IdleReaper.h>
#include <keel/heartbeat/PongResponder.h>
#include <keel/net/FrameCodec.h>

#include "Protocol.h"

namespace presence {
namespace {

using Ms = std::chrono::duration<double, std::milli>;

class Session final : public keel::Handler {
 public:
  explicit Session(Room& room) : room_(room) {}

  void onFrame(keel::HandlerContext& ctx, std::span<const char> frame) override {
    const auto [verb, rest] = splitVerb(std::string_view(frame.data(), frame.size()));
    if (name_.empty()) {
      if (verb != "JOIN" || !validName(rest)) return refuse(ctx, "JOIN <name> first (1-32 of A-Za-z0-9_-)");
      join(ctx, std::string(rest));
    } else if (verb == "STATUS") {
      if (rest.size() > kMaxStatus) return refuse(ctx, "status too long");
      room_.directory.setStatus(name_, &ctx.connection(), rest);
      std::string update = "STATUS " + name_ + " ";
      update.append(rest);
      room_.group.broadcast(update, &ctx.connection());
    } else {
      refuse(ctx, "unknown command");
    }
  }

  void onUserEvent(keel::HandlerContext& ctx, const keel::UserEvent& ev) override {
    const auto* hb = dynamic_cast<const keel::HeartbeatEvent*>(&ev);
    if (hb != nullptr && hb->kind == keel::HeartbeatEvent::Kind::PeerDead && room_.config.verbose) {
      std::printf("dead %s silent %.0f ms\n", display().c_str(), Ms(hb->silence).count());
      std::fflush(stdout);
    }
    ctx.fireUserEvent(ev);
  }

  void onClosed(keel::HandlerContext& ctx, keel::CloseReason reason) override {
    if (!name_.empty()) {
      // A name taken over by a newer connection is still online: the others
      // are not told it left.
      const bool owned = room_.directory.release(name_, &ctx.connection());
      const std::string why = owned ? std::string(keel::toString(reason)) : "replaced";
      if (owned) room_.group.broadcast("LEFT " + name_ + " " + why, &ctx.connection());
      if (room_.config.verbose) {
        const auto* hb = ctx.pipeline().find<keel::Heartbeat>();
        std::printf("leave %s %s rtt %.3f ms (%llu samples)\n", name_.c_str(), why.c_str(),
                    hb != nullptr ? Ms(hb->smoothedRtt()).count() : 0.0,
                    static_cast<unsigned long long>(hb != nullptr ? hb->pongsReceived() : 0));
        std::fflush(stdout);
      }
    }
    ctx.fireClosed(reason);
  }

 private:
  void join(keel::HandlerContext& ctx, std::string name) {
    keel::Connection& conn = ctx.connection();
    std::vector<Directory::Member> others;
    const auto previous = room_.directory.claim(name, conn.shared_from_this(), others);
    name_ = std::move(name);
    // The old connection may live on another loop; close() is safe from any.
    if (auto old = previous.lock()) old->close(keel::CloseReason::LocalClose);
    (void)ctx.writeFrame(std::string_view("WELCOME " + name_ + " " + std::to_string(others.size())));
    for (const auto& m : others) (void)ctx.writeFrame(std::string_view("ONLINE " + m.name + " " + m.status));
    room_.group.broadcast("JOINED " + name_, &conn);
    if (room_.config.verbose) {
      std::printf("join %s from %s\n", name_.c_str(), conn.peerAddress().toString().c_str());
      std::fflush(stdout);
    }
  }

  void refuse(keel::HandlerContext& ctx, std::string_view why) {
    (void)ctx.writeFrame(std::string_view("ERROR " + std::string(why)));
    ctx.close(keel::CloseReason::ProtocolError);
  }

  [[nodiscard]] std::string display() const { return name_.empty() ? "(not joined)" : name_; }

  Room& room_;
  std::string name_;  // empty until JOIN
};

}  // namespace

std::weak_ptr<keel::Connection> Directory::claim(const std::string& name, const keel::Connection::Ptr& conn,
                                                 std::vector<Member>& others) {
  std::lock_guard lock(mutex_);
  others.clear();
  for (const auto& [n, e] : entries_) {
    if (n != name) others.push_back({n, e.status});
  }
  Entry& e = entries_[name];
  std::weak_ptr<keel::Connection> previous = std::move(e.conn);
  e = Entry{conn, conn.get(), {}};
  return previous;
}

void Directory::setStatus(const std::string& name, const keel::Connection* conn, std::string_view status) {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(name);
  if (it != entries_.end() && it->second.owner == conn) it->second.status.assign(status);
}

bool Directory::release(const std::string& name, const keel::Connection* conn) {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(name);
  if (it == entries_.end() || it->second.owner != conn) return false;
  entries_.erase(it);
  return true;
}

std::size_t Directory::size() const {
  std::lock_guard lock(mutex_);
  return entries_.size();
}

void initPipeline(keel::Connection& conn, Room& room) {
  auto& p = conn.pipeline();
  p.emplaceLast<keel::FrameCodec>(kMaxFrame);
  p.emplaceLast<keel::Heartbeat>(room.config.heartbeat);
  p.emplaceLast<keel::PongResponder>();
  keel::IdleLimits limits;
  limits.reader = room.config.silence;
  // Frames: PINGs and PONGs do not count as activity, STATUS frames do.
  p.emplaceLast<keel::IdleReaper>(limits, keel::IdleAction::Close, keel::IdleActivity::Frames);
  p.emplaceLast<Session>(room);
  (void)room.group.join(conn);
}

}  // namespace presence
