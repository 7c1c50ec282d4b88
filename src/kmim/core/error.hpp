// Errors with context. A kmim program turns any Error into one line on stderr and exit code 1
// (see kmim/dist/program.hpp). Messages name the file, option or value at fault and say what is
// wrong with it, e.g. "option --k=0: must be at least 1" or "file 'a.h5': not a kmim codebook".
#pragma once

#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>

namespace kmim {

/// Base class of every error kmim reports to a user.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

/// A problem with an input or output file: "file '<path>': <problem>".
class FileError : public Error {
 public:
  FileError(const std::filesystem::path& file, std::string_view problem);
  const std::filesystem::path& file() const { return file_; }

 private:
  std::filesystem::path file_;
};

/// A problem with a command-line or config-file option: "option --<name>=<value>: <problem>".
/// Every rank sees the same options, so a UsageError is raised identically on all ranks and
/// is reported once (by rank 0) without aborting the MPI job.
class UsageError : public Error {
 public:
  explicit UsageError(const std::string& message) : Error(message) {}
};

class OptionError : public UsageError {
 public:
  OptionError(std::string_view option, std::string_view value, std::string_view problem);
  const std::string& option() const { return option_; }

 private:
  std::string option_;
};

/// Throws OptionError(option, value, problem) unless `condition` holds.
void require_option(bool condition, std::string_view option, std::string_view value,
                    std::string_view problem);

/// Throws FileError(file, problem) unless `condition` holds.
void require_file(bool condition, const std::filesystem::path& file, std::string_view problem);

/// Reads errno-style failures: "<what>: <strerror(errnum)>".
std::string system_message(std::string_view what, int errnum);

}  // namespace kmim
