// <out-dir>/metrics.jsonl: one JSON object per line, appended by rank 0 and flushed per record,
// for the report tool's loss and accuracy plots (fields in docs/pretrain.md, "metrics.jsonl").
// Every record has a "step" field (optimizer steps done when it was written). A resumed run
// first drops the records written after its checkpoint's step (they belong to steps that are
// run again), so the file reads as one uninterrupted run.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

namespace kmim::train {

class MetricsLog {
 public:
  /// Opens `file` for appending. keep_through_step < 0: start a new file (an existing one is
  /// replaced); otherwise keep the existing records whose step is <= keep_through_step (lines
  /// that do not parse are dropped too) and append after them. Throws FileError on I/O errors.
  MetricsLog(std::filesystem::path file, std::int64_t keep_through_step);

  /// Appends one record as a line and flushes it.
  void append(const nlohmann::json& record);

  const std::filesystem::path& path() const { return file_; }

 private:
  std::filesystem::path file_;
  std::ofstream out_;
};

}  // namespace kmim::train
