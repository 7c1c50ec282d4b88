#include "kmim/io/atomic_output.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <string>

#include "kmim/core/error.hpp"

namespace kmim::io {
namespace fs = std::filesystem;

namespace {
/// Flushes a file or folder to disk; false (errno set) when that fails.
bool fsync_path(const fs::path& p, bool directory) {
  const int fd = ::open(p.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (fd < 0) return false;
  const bool ok = ::fsync(fd) == 0;
  const int saved = errno;
  ::close(fd);
  errno = saved;
  return ok;
}

int comm_rank(MPI_Comm comm) {
  int rank = 0;
  if (comm != MPI_COMM_NULL) MPI_Comm_rank(comm, &rank);
  return rank;
}
}  // namespace

fs::path partial_path(const fs::path& final_path) {
  fs::path p = final_path;
  p += ".partial";
  return p;
}

AtomicOutput::AtomicOutput(fs::path final_path, MPI_Comm comm)
    : final_(std::move(final_path)), temp_(partial_path(final_)), comm_(comm) {
  const fs::path dir = final_.has_parent_path() ? final_.parent_path() : fs::path(".");
  if (comm_rank(comm_) == 0) {
    ensure_writable_directory(dir);
    std::error_code ec;
    fs::remove(temp_, ec);  // a leftover from an interrupted run
  }
  if (comm_ != MPI_COMM_NULL) MPI_Barrier(comm_);
}

AtomicOutput::~AtomicOutput() {
  if (committed_ || comm_rank(comm_) != 0) return;
  std::error_code ec;
  fs::remove(temp_, ec);
}

void AtomicOutput::commit() {
  if (committed_) return;
  if (comm_ != MPI_COMM_NULL) MPI_Barrier(comm_);  // every rank has closed its handle
  int ok = 1;
  std::string problem;
  if (comm_rank(comm_) == 0) {
    std::error_code ec;
    if (!fsync_path(temp_, false)) {
      ok = 0;
      problem = system_message("cannot flush the finished output to disk", errno);
      fs::remove(temp_, ec);
    } else {
      fs::rename(temp_, final_, ec);
    }
    if (ok && ec) {
      ok = 0;
      problem = "cannot move the finished output into place: " + ec.message();
      fs::remove(temp_, ec);
    } else if (ok) {
      fsync_path(final_.has_parent_path() ? final_.parent_path() : fs::path("."), true);
    }
  }
  if (comm_ != MPI_COMM_NULL) MPI_Bcast(&ok, 1, MPI_INT, 0, comm_);
  if (!ok) throw FileError(final_, problem.empty() ? "cannot move the output into place" : problem);
  committed_ = true;
}

void ensure_writable_directory(const fs::path& dir) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) {
    fs::create_directories(dir, ec);
    if (ec) throw FileError(dir, "cannot create the output folder: " + ec.message());
  }
  if (!fs::is_directory(dir, ec)) throw FileError(dir, "is not a folder");
  if (::access(dir.c_str(), W_OK | X_OK) != 0)
    throw FileError(dir, system_message("output folder is not writable", errno));
}

void write_text_file_atomic(const fs::path& path, const std::string& text) {
  AtomicOutput out(path);
  {
    std::ofstream f(out.temp_path(), std::ios::binary);
    f << text;
    f.flush();
    if (!f) throw FileError(path, "cannot write (disk full or not writable?)");
  }
  out.commit();
}

}  // namespace kmim::io
