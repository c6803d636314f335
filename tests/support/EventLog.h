// An ordered record of what handlers saw ("fin", "closed:peer-closed"...),
// written on a loop thread and read by the test thread.
#pragma once

#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace keel::test {

struct EventLog {
  std::mutex m;
  std::vector<std::string> events;

  void add(std::string e) {
    std::lock_guard l(m);
    events.push_back(std::move(e));
  }
  std::vector<std::string> get() {
    std::lock_guard l(m);
    return events;
  }
};

}  // namespace keel::test
