#include "kmim/core/log.hpp"

#include <chrono>
#include <cstdlib>
#include <ctime>
#include <iostream>

#include "kmim/core/error.hpp"

namespace kmim {

LogLevel parse_log_level(std::string_view text) {
  if (text == "debug") return LogLevel::debug;
  if (text == "info") return LogLevel::info;
  if (text == "warn") return LogLevel::warn;
  if (text == "error") return LogLevel::error;
  throw UsageError(fmt::format("log level '{}': expected debug, info, warn or error", text));
}

std::string_view to_string(LogLevel level) {
  switch (level) {
    case LogLevel::debug: return "debug";
    case LogLevel::info: return "info";
    case LogLevel::warn: return "warn";
    case LogLevel::error: return "error";
  }
  return "?";
}

Logger& Logger::global() {
  static Logger logger;
  return logger;
}

void Logger::configure(int rank, int size, LogLevel level, bool all_ranks) {
  std::lock_guard lock(mutex_);
  rank_ = rank;
  size_ = size;
  level_ = level;
  all_ranks_ = all_ranks;
}

void Logger::configure_from_environment() {
  if (const char* lvl = std::getenv("KMIM_LOG_LEVEL"); lvl && *lvl) level_ = parse_log_level(lvl);
  if (const char* all = std::getenv("KMIM_LOG_ALL_RANKS"); all && std::string_view(all) == "1")
    all_ranks_ = true;
}

void Logger::set_sink(std::ostream* sink) {
  std::lock_guard lock(mutex_);
  sink_ = sink;
}

bool Logger::enabled(LogLevel level) const {
  if (level < level_) return false;
  // Warnings and errors are rank-specific news: every rank reports its own.
  return rank_ == 0 || all_ranks_ || level >= LogLevel::warn;
}

void Logger::write(LogLevel level, std::string_view message) {
  std::string line;
  if (timestamps_) {
    const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
    std::tm tm{};
    localtime_r(&now, &tm);
    char stamp[32];
    std::strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S ", &tm);
    line += stamp;
  }
  line += fmt::format("{:<5} [{}/{}] {}\n", to_string(level), rank_, size_, message);
  std::lock_guard lock(mutex_);
  std::ostream& out = sink_ ? *sink_ : std::cerr;
  out << line;
  out.flush();
}

}  // namespace kmim
