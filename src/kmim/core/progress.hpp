// Progress reporting for long loops: done/total, rate and ETA, printed through the logger at
// most every `interval` seconds (and once at the end), e.g.
//   shard train: 12800/126689 images (10.1%), 812.4 images/s, ETA 2m20s
// The caller passes counts that are already global (summed over ranks) when it wants job-wide
// rates; Progress itself does no communication.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace kmim {

class Logger;

/// "1h02m03s", "2m20s", "45s"; "?" for a negative or non-finite value.
std::string format_duration(double seconds);

/// Seconds left at the current average rate; negative when unknown (nothing done yet).
double eta_seconds(std::uint64_t done, std::uint64_t total, double elapsed_seconds);

/// The text of one progress line (no timestamp/rank prefix).
std::string format_progress(const std::string& label, std::uint64_t done, std::uint64_t total,
                            const std::string& unit, double elapsed_seconds);

class Progress {
 public:
  using Clock = std::chrono::steady_clock;

  Progress(std::string label, std::uint64_t total, std::string unit = "items",
           double interval_seconds = 5.0);
  Progress(std::string label, std::uint64_t total, std::string unit, double interval_seconds,
           Logger& logger);

  /// Adds n to the done count; prints when the interval has passed.
  void advance(std::uint64_t n = 1);
  /// Sets the done count (e.g. a globally reduced count); prints when the interval has passed.
  void update(std::uint64_t done);
  /// Prints the final line (once).
  void finish();

  std::uint64_t done() const { return done_; }
  std::uint64_t total() const { return total_; }
  double elapsed_seconds() const;
  /// Done per second since construction.
  double rate() const;

 private:
  void maybe_print();

  std::string label_;
  std::uint64_t total_;
  std::string unit_;
  double interval_;
  Logger* logger_;
  std::uint64_t done_ = 0;
  Clock::time_point start_;
  Clock::time_point last_print_;
  bool finished_ = false;
};

}  // namespace kmim
