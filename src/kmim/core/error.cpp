#include "kmim/core/error.hpp"

#include <cstring>

#include <fmt/format.h>

namespace kmim {

FileError::FileError(const std::filesystem::path& file, std::string_view problem)
    : Error(fmt::format("file '{}': {}", file.string(), problem)), file_(file) {}

OptionError::OptionError(std::string_view option, std::string_view value,
                         std::string_view problem)
    : UsageError(value.empty() ? fmt::format("option --{}: {}", option, problem)
                               : fmt::format("option --{}={}: {}", option, value, problem)),
      option_(option) {}

void require_option(bool condition, std::string_view option, std::string_view value,
                    std::string_view problem) {
  if (!condition) throw OptionError(option, value, problem);
}

void require_file(bool condition, const std::filesystem::path& file, std::string_view problem) {
  if (!condition) throw FileError(file, problem);
}

std::string system_message(std::string_view what, int errnum) {
  return fmt::format("{}: {}", what, std::strerror(errnum));
}

}  // namespace kmim
