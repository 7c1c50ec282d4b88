#include "kmim/train/metrics_log.hpp"

#include <string>
#include <vector>

#include "kmim/core/error.hpp"
#include "kmim/io/atomic_output.hpp"

namespace kmim::train {

MetricsLog::MetricsLog(std::filesystem::path file, std::int64_t keep_through_step)
    : file_(std::move(file)) {
  std::string kept;
  if (keep_through_step >= 0 && std::filesystem::exists(file_)) {
    std::ifstream in(file_);
    std::string line;
    while (std::getline(in, line)) {
      const nlohmann::json record = nlohmann::json::parse(line, nullptr, false);
      if (record.is_discarded() || !record.is_object() || !record.contains("step") ||
          !record["step"].is_number_integer()) {
        continue;
      }
      if (record["step"].get<std::int64_t>() <= keep_through_step) kept += line + "\n";
    }
  }
  // Replace the file atomically with the kept records, then append to it.
  io::write_text_file_atomic(file_, kept);
  out_.open(file_, std::ios::app);
  require_file(out_.good(), file_, "cannot open for appending");
}

void MetricsLog::append(const nlohmann::json& record) {
  out_ << record.dump() << '\n';
  out_.flush();
  require_file(out_.good(), file_, "cannot append a record (disk full?)");
}

}  // namespace kmim::train
