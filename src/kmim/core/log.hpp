// Rank-aware logging. Lines look like
//   2026-11-28 18:40:01 info  [0/2] kmeans: iteration 3 inertia 1.234e+05
// By default only rank 0 prints (all ranks run the same code, so rank 0 speaks for the job);
// warnings and errors print on every rank. KMIM_LOG_LEVEL=debug|info|warn|error and
// KMIM_LOG_ALL_RANKS=1 override the defaults at run time.
#pragma once

#include <mutex>
#include <ostream>
#include <string>
#include <string_view>

#include <fmt/format.h>

namespace kmim {

enum class LogLevel { debug = 0, info = 1, warn = 2, error = 3 };

/// Parses "debug", "info", "warn" or "error"; throws UsageError otherwise.
LogLevel parse_log_level(std::string_view text);
std::string_view to_string(LogLevel level);

class Logger {
 public:
  /// The process's logger (configured once per process by the program's entry point).
  static Logger& global();

  /// rank/size label the lines; all_ranks makes info/debug print on every rank.
  void configure(int rank, int size, LogLevel level, bool all_ranks = false);
  /// Applies KMIM_LOG_LEVEL / KMIM_LOG_ALL_RANKS if set.
  void configure_from_environment();
  void set_sink(std::ostream* sink);  // default std::cerr; tests capture output here
  void set_timestamps(bool on) { timestamps_ = on; }

  bool enabled(LogLevel level) const;
  void write(LogLevel level, std::string_view message);

  template <class... Args>
  void debug(fmt::format_string<Args...> f, Args&&... args) {
    if (enabled(LogLevel::debug)) write(LogLevel::debug, fmt::format(f, std::forward<Args>(args)...));
  }
  template <class... Args>
  void info(fmt::format_string<Args...> f, Args&&... args) {
    if (enabled(LogLevel::info)) write(LogLevel::info, fmt::format(f, std::forward<Args>(args)...));
  }
  template <class... Args>
  void warn(fmt::format_string<Args...> f, Args&&... args) {
    if (enabled(LogLevel::warn)) write(LogLevel::warn, fmt::format(f, std::forward<Args>(args)...));
  }
  template <class... Args>
  void error(fmt::format_string<Args...> f, Args&&... args) {
    if (enabled(LogLevel::error)) write(LogLevel::error, fmt::format(f, std::forward<Args>(args)...));
  }

  int rank() const { return rank_; }
  int size() const { return size_; }

 private:
  std::mutex mutex_;
  std::ostream* sink_ = nullptr;
  LogLevel level_ = LogLevel::info;
  int rank_ = 0;
  int size_ = 1;
  bool all_ranks_ = false;
  bool timestamps_ = true;
};

/// Shorthand for Logger::global().
inline Logger& log() { return Logger::global(); }

}  // namespace kmim
