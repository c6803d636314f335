#include "keel/net/ConnectionGroup.h"

#include <mutex>
#include <string>
#include <vector>

#include "keel/core/EventLoop.h"
#include "keel/net/Connection.h"

namespace keel {

// Named (not in an unnamed namespace) because State, a member of a public
// class, refers to them.
class GroupMember;
using Member = GroupMember;

// The members on one loop. The list is touched only on that loop; `count`
// is there for other threads to see whether the loop needs a task at all.
struct GroupShard {
  explicit GroupShard(EventLoop& l) noexcept : loop(&l) {}
  EventLoop* loop;
  std::vector<Member*> members;
  std::atomic<std::size_t> count{0};
  int walking = 0;     // a broadcast or closeAll is going through `members`
  bool holes = false;  // members left during the walk (null entries)
};
using Shard = GroupShard;

struct ConnectionGroup::State {
  explicit State(GroupOptions o) noexcept : options(o) {}

  Shard& shardFor(EventLoop& loop);
  // Loop thread of `shard`: calls f(conn) for every member still there.
  template <class F>
  void walk(Shard& shard, F f);
  void add(Shard& shard, Member& m);
  void remove(Shard& shard, Member& m) noexcept;
  void compact(Shard& shard) noexcept;
  void deliver(Shard& shard, std::string_view message, const Connection* except);
  // Runs f(shard) for every shard with members: inline for the caller's own
  // loop (after the others are queued), else as a task on the shard's loop.
  template <class Local, class Remote>
  void forEachShard(Local local, Remote remote);

  const GroupOptions options;
  std::mutex mutex;  // the shard list (not the shards' contents)
  std::vector<std::unique_ptr<Shard>> shards;
  std::atomic<std::size_t> members{0};
  std::atomic<std::uint64_t> delivered{0};
  std::atomic<std::uint64_t> dropped{0};
  std::atomic<std::uint64_t> closed{0};
  std::atomic<std::uint64_t> refused{0};
};

// The membership token in a member's pipeline: its removal (the connection
// closed, or leave()) is what takes the connection out of the group.
class GroupMember final : public Handler {
 public:
  GroupMember(std::shared_ptr<ConnectionGroup::State> state, Shard& shard) noexcept
      : state_(std::move(state)), shard_(shard) {}
  [[nodiscard]] std::string_view name() const noexcept override { return "group-member"; }
  void handlerAdded(HandlerContext& ctx) override {
    conn_ = &ctx.connection();
    state_->add(shard_, *this);
  }
  void handlerRemoved(HandlerContext&) override { state_->remove(shard_, *this); }

  [[nodiscard]] bool of(const ConnectionGroup::State& s) const noexcept { return state_.get() == &s; }

  std::shared_ptr<ConnectionGroup::State> state_;  // keeps the shard alive after the group is gone
  Shard& shard_;
  Connection* conn_ = nullptr;
  std::size_t index = 0;  // position in shard_.members
};

Shard& ConnectionGroup::State::shardFor(EventLoop& loop) {
  std::lock_guard lock(mutex);
  for (auto& s : shards) {
    if (s->loop == &loop) return *s;
  }
  shards.push_back(std::make_unique<Shard>(loop));
  return *shards.back();
}

void ConnectionGroup::State::add(Shard& shard, Member& m) {
  m.index = shard.members.size();
  shard.members.push_back(&m);
  shard.count.fetch_add(1, std::memory_order_relaxed);
  members.fetch_add(1, std::memory_order_relaxed);
}

void ConnectionGroup::State::remove(Shard& shard, Member& m) noexcept {
  if (shard.walking > 0) {
    // A walk may already have passed this entry or be about to reach it:
    // leave a hole rather than move another member behind its back.
    shard.members[m.index] = nullptr;
    shard.holes = true;
  } else {
    Member* last = shard.members.back();
    shard.members[m.index] = last;
    last->index = m.index;
    shard.members.pop_back();
  }
  shard.count.fetch_sub(1, std::memory_order_relaxed);
  members.fetch_sub(1, std::memory_order_relaxed);
}

void ConnectionGroup::State::compact(Shard& shard) noexcept {
  std::size_t out = 0;
  for (Member* m : shard.members) {
    if (m == nullptr) continue;
    m->index = out;
    shard.members[out++] = m;
  }
  shard.members.resize(out);
  shard.holes = false;
}

template <class F>
void ConnectionGroup::State::walk(Shard& shard, F f) {
  ++shard.walking;
  // By index: a member joining during the walk (from a handler the send
  // ran) appends, which may move the vector.
  for (std::size_t i = 0; i < shard.members.size(); ++i) {
    if (Member* m = shard.members[i]) f(*m->conn_);
  }
  if (--shard.walking == 0 && shard.holes) compact(shard);
}

void ConnectionGroup::State::deliver(Shard& shard, std::string_view message, const Connection* except) {
  // Counted locally and published once per walk: no atomic per member.
  std::uint64_t sent = 0;
  std::uint64_t full = 0;
  std::uint64_t reset = 0;
  std::uint64_t refusedHere = 0;
  walk(shard, [&](Connection& c) {
    if (&c == except || !c.canWrite()) return;
    const std::size_t limit = options.maxQueued != 0 ? options.maxQueued : c.options().highWatermark;
    if (c.outputBytes() >= limit) {
      if (options.overflow == Overflow::Drop) {
        ++full;
      } else {
        ++reset;
        c.close(CloseReason::Overloaded, CloseMode::Reset);
      }
      return;
    }
    if (c.send(message)) {
      ++sent;
    } else {
      ++refusedHere;
    }
  });
  if (sent != 0) delivered.fetch_add(sent, std::memory_order_relaxed);
  if (full != 0) dropped.fetch_add(full, std::memory_order_relaxed);
  if (reset != 0) closed.fetch_add(reset, std::memory_order_relaxed);
  if (refusedHere != 0) refused.fetch_add(refusedHere, std::memory_order_relaxed);
}

template <class Local, class Remote>
void ConnectionGroup::State::forEachShard(Local local, Remote remote) {
  Shard* mine = nullptr;
  {
    std::lock_guard lock(mutex);
    for (auto& s : shards) {
      if (s->count.load(std::memory_order_relaxed) == 0) continue;
      if (s->loop->isInLoopThread()) {
        mine = s.get();
      } else {
        remote(*s);
      }
    }
  }
  if (mine != nullptr) local(*mine);
}

ConnectionGroup::ConnectionGroup(GroupOptions options)
    : options_(options), state_(std::make_shared<State>(options)) {}

ConnectionGroup::~ConnectionGroup() = default;

bool ConnectionGroup::join(Connection& conn) {
  KEEL_ASSERT_IN_LOOP(conn.loop(), "ConnectionGroup::join");
  if (conn.closed()) return false;
  const State& s = *state_;
  if (conn.pipeline().findIf<Member>([&s](const Member& m) { return m.of(s); }) != nullptr) return false;
  Shard& shard = state_->shardFor(conn.loop());
  conn.pipeline().addLast(std::make_unique<Member>(state_, shard));
  return true;
}

bool ConnectionGroup::leave(Connection& conn) {
  KEEL_ASSERT_IN_LOOP(conn.loop(), "ConnectionGroup::leave");
  const State& s = *state_;
  Member* m = conn.pipeline().findIf<Member>([&s](const Member& h) { return h.of(s); });
  return m != nullptr && conn.pipeline().remove(*m);
}

void ConnectionGroup::broadcast(std::string_view message, const Connection* except) {
  std::shared_ptr<const std::string> copy;  // one per broadcast, shared by the other loops
  state_->forEachShard([&](Shard& mine) { state_->deliver(mine, message, except); },
                       [&](Shard& other) {
                         if (!copy) copy = std::make_shared<const std::string>(message);
                         other.loop->queueInLoop([state = state_, shard = &other, copy, except] {
                           state->deliver(*shard, *copy, except);
                         });
                       });
}

void ConnectionGroup::closeAll(CloseReason reason, CloseMode mode) {
  auto closeEach = [reason, mode](State& state, Shard& shard) {
    state.walk(shard, [&](Connection& c) { c.close(reason, mode); });
  };
  state_->forEachShard(
      [&](Shard& mine) { closeEach(*state_, mine); },
      [&](Shard& other) {
        other.loop->queueInLoop([state = state_, shard = &other, closeEach] { closeEach(*state, *shard); });
      });
}

std::size_t ConnectionGroup::size() const noexcept { return state_->members.load(std::memory_order_relaxed); }

GroupStats ConnectionGroup::stats() const noexcept {
  GroupStats s;
  s.delivered = state_->delivered.load(std::memory_order_relaxed);
  s.dropped = state_->dropped.load(std::memory_order_relaxed);
  s.closed = state_->closed.load(std::memory_order_relaxed);
  s.refused = state_->refused.load(std::memory_order_relaxed);
  s.members = size();
  return s;
}

}  // namespace keel
