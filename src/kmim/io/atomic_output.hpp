// Atomic output files: write under a temporary name beside the final one, rename on success.
//
//   AtomicOutput out("codebook.h5");
//   write_everything(out.temp_path());
//   out.commit();   // fsync + rename: "codebook.h5" appears complete or not at all
//
// If commit() is never reached (an exception, a crash), the destructor removes the temporary
// file, and a later run ignores (and overwrites) any "<name>.partial" it finds. The temporary
// name is deterministic so that all MPI ranks writing one parallel HDF5 file agree on it;
// with a communicator, commit() is collective and rank 0 does the rename.
#pragma once

#include <filesystem>

#include <mpi.h>

namespace kmim::io {

class AtomicOutput {
 public:
  explicit AtomicOutput(std::filesystem::path final_path, MPI_Comm comm = MPI_COMM_NULL);
  ~AtomicOutput();
  AtomicOutput(const AtomicOutput&) = delete;
  AtomicOutput& operator=(const AtomicOutput&) = delete;

  const std::filesystem::path& final_path() const { return final_; }
  const std::filesystem::path& temp_path() const { return temp_; }
  /// Flushes the temporary file to disk and renames it to the final name. Throws FileError
  /// (naming the final path) when that fails; the temporary file is removed then too.
  void commit();
  bool committed() const { return committed_; }

 private:
  std::filesystem::path final_;
  std::filesystem::path temp_;
  MPI_Comm comm_;
  bool committed_ = false;
};

/// The temporary name AtomicOutput uses for `final_path` ("<final>.partial").
std::filesystem::path partial_path(const std::filesystem::path& final_path);

/// Checks that `dir` exists (creating it if needed) and that a file can be created in it;
/// throws FileError naming the folder otherwise.
void ensure_writable_directory(const std::filesystem::path& dir);

/// Writes `text` to `path` atomically (temporary + rename).
void write_text_file_atomic(const std::filesystem::path& path, const std::string& text);

}  // namespace kmim::io
