#include "kmim/core/progress.hpp"

#include <cmath>

#include <fmt/format.h>

#include "kmim/core/log.hpp"

namespace kmim {

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  auto s = static_cast<std::uint64_t>(std::llround(seconds));
  const std::uint64_t h = s / 3600, m = (s % 3600) / 60, r = s % 60;
  if (h > 0) return fmt::format("{}h{:02}m{:02}s", h, m, r);
  if (m > 0) return fmt::format("{}m{:02}s", m, r);
  return fmt::format("{}s", r);
}

double eta_seconds(std::uint64_t done, std::uint64_t total, double elapsed_seconds) {
  if (done == 0 || elapsed_seconds <= 0) return -1.0;
  if (done >= total) return 0.0;
  return elapsed_seconds * static_cast<double>(total - done) / static_cast<double>(done);
}

std::string format_progress(const std::string& label, std::uint64_t done, std::uint64_t total,
                            const std::string& unit, double elapsed_seconds) {
  const double rate = elapsed_seconds > 0 ? static_cast<double>(done) / elapsed_seconds : 0.0;
  const double pct = total > 0 ? 100.0 * static_cast<double>(done) / static_cast<double>(total)
                               : 100.0;
  return fmt::format("{}: {}/{} {} ({:.1f}%), {:.1f} {}/s, ETA {}", label, done, total, unit,
                     pct, rate, unit, format_duration(eta_seconds(done, total, elapsed_seconds)));
}

Progress::Progress(std::string label, std::uint64_t total, std::string unit,
                   double interval_seconds)
    : Progress(std::move(label), total, std::move(unit), interval_seconds, Logger::global()) {}

Progress::Progress(std::string label, std::uint64_t total, std::string unit,
                   double interval_seconds, Logger& logger)
    : label_(std::move(label)),
      total_(total),
      unit_(std::move(unit)),
      interval_(interval_seconds),
      logger_(&logger),
      start_(Clock::now()),
      last_print_(start_) {}

double Progress::elapsed_seconds() const {
  return std::chrono::duration<double>(Clock::now() - start_).count();
}

double Progress::rate() const {
  const double e = elapsed_seconds();
  return e > 0 ? static_cast<double>(done_) / e : 0.0;
}

void Progress::advance(std::uint64_t n) {
  done_ += n;
  maybe_print();
}

void Progress::update(std::uint64_t done) {
  done_ = done;
  maybe_print();
}

void Progress::maybe_print() {
  const auto now = Clock::now();
  if (std::chrono::duration<double>(now - last_print_).count() < interval_) return;
  last_print_ = now;
  logger_->info("{}", format_progress(label_, done_, total_, unit_, elapsed_seconds()));
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  logger_->info("{}", format_progress(label_, done_, total_, unit_, elapsed_seconds()));
}

}  // namespace kmim
