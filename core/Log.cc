#include "keel/core/Log.h"

#include <atomic>
#include <mutex>
#include <vector>

#include <spdlog/sinks/stdout_color_sinks.h>

namespace keel {
namespace {

std::shared_ptr<spdlog::logger> makeDefault() {
  auto sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  auto log = std::make_shared<spdlog::logger>("keel", std::move(sink));
  log->set_level(spdlog::level::info);
  log->set_pattern("%Y-%m-%d %H:%M:%S.%e %^%l%$ keel[%t] %v");
  return log;
}

struct Registry {
  std::mutex mutex;
  std::vector<std::shared_ptr<spdlog::logger>> retired;  // keeps old loggers alive
  std::atomic<spdlog::logger*> current{nullptr};

  Registry() { install(makeDefault()); }
  void install(std::shared_ptr<spdlog::logger> log) {
    std::lock_guard lock(mutex);
    current.store(log.get(), std::memory_order_release);
    retired.push_back(std::move(log));
  }
};

Registry& registry() {
  static Registry r;
  return r;
}

}  // namespace

spdlog::logger& logger() noexcept { return *registry().current.load(std::memory_order_acquire); }

void setLogger(std::shared_ptr<spdlog::logger> replacement) {
  registry().install(replacement ? std::move(replacement) : makeDefault());
}

void setLogLevel(spdlog::level::level_enum level) { logger().set_level(level); }

}  // namespace keel
