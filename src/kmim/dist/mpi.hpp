// MPI, the RAII way. Every kmim program is an MPI program: under mpirun/srun it runs on all
// ranks, started directly it runs as a singleton of size 1.
//
// Communicator wraps a communicator with typed collectives over std::span. Nothing here is
// CUDA-aware: never pass device pointers (use NCCL for device buffers).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include <mpi.h>

namespace kmim::dist {

template <class T>
MPI_Datatype mpi_type() {
  if constexpr (std::is_same_v<T, float>) return MPI_FLOAT;
  else if constexpr (std::is_same_v<T, double>) return MPI_DOUBLE;
  else if constexpr (std::is_same_v<T, std::int8_t>) return MPI_INT8_T;
  else if constexpr (std::is_same_v<T, std::uint8_t>) return MPI_UINT8_T;
  else if constexpr (std::is_same_v<T, char>) return MPI_CHAR;
  else if constexpr (std::is_same_v<T, std::int32_t>) return MPI_INT32_T;
  else if constexpr (std::is_same_v<T, std::uint32_t>) return MPI_UINT32_T;
  else if constexpr (std::is_same_v<T, std::int64_t> || std::is_same_v<T, long long>) return MPI_INT64_T;
  else if constexpr (std::is_same_v<T, std::uint64_t> || std::is_same_v<T, unsigned long long>) return MPI_UINT64_T;
  else static_assert(sizeof(T) == 0, "no MPI datatype for this type");
}

/// Throws kmim::Error naming the MPI call and the library's message when rc != MPI_SUCCESS.
void check_mpi(int rc, const char* call);

/// Initialises MPI (thread level FUNNELED) on construction unless it is already initialised,
/// and finalises it on destruction if it initialised it.
class MpiSession {
 public:
  MpiSession(int& argc, char**& argv);
  MpiSession();
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

 private:
  bool owns_ = false;
};

enum class ReduceOp { sum, max, min };

class Communicator {
 public:
  /// MPI_COMM_WORLD (MPI must be initialised).
  Communicator();
  explicit Communicator(MPI_Comm comm);

  MPI_Comm get() const { return comm_; }
  int rank() const { return rank_; }
  int size() const { return size_; }
  bool is_root() const { return rank_ == 0; }

  void barrier() const;

  /// In place: every rank ends with the elementwise reduction over ranks.
  template <class T>
  void allreduce(std::span<T> data, ReduceOp op = ReduceOp::sum) const {
    if (size_ == 1 || data.empty()) return;
    check_mpi(MPI_Allreduce(MPI_IN_PLACE, data.data(), static_cast<int>(data.size()),
                            mpi_type<T>(), mpi_op(op), comm_),
              "MPI_Allreduce");
  }
  template <class T>
  T allreduce(T value, ReduceOp op = ReduceOp::sum) const {
    allreduce(std::span<T>(&value, 1), op);
    return value;
  }
  /// True on every rank when `flag` is true on any rank.
  bool any(bool flag) const;

  template <class T>
  void bcast(std::span<T> data, int root = 0) const {
    if (size_ == 1 || data.empty()) return;
    check_mpi(MPI_Bcast(data.data(), static_cast<int>(data.size()), mpi_type<T>(), root, comm_),
              "MPI_Bcast");
  }
  template <class T>
  T bcast(T value, int root = 0) const {
    bcast(std::span<T>(&value, 1), root);
    return value;
  }
  std::string bcast(const std::string& text, int root = 0) const;

  /// Every rank's value, in rank order, on every rank.
  template <class T>
  std::vector<T> allgather(T value) const {
    std::vector<T> out(static_cast<std::size_t>(size_));
    check_mpi(MPI_Allgather(&value, 1, mpi_type<T>(), out.data(), 1, mpi_type<T>(), comm_),
              "MPI_Allgather");
    return out;
  }
  /// Variable-length allgather: the concatenation of every rank's data, in rank order.
  template <class T>
  std::vector<T> allgatherv(std::span<const T> data) const {
    const std::vector<int> counts = allgather(static_cast<int>(data.size()));
    std::vector<int> displs(counts.size(), 0);
    for (std::size_t i = 1; i < counts.size(); ++i) displs[i] = displs[i - 1] + counts[i - 1];
    std::vector<T> out(static_cast<std::size_t>(displs.back() + counts.back()));
    check_mpi(MPI_Allgatherv(data.data(), static_cast<int>(data.size()), mpi_type<T>(), out.data(),
                             counts.data(), displs.data(), mpi_type<T>(), comm_),
              "MPI_Allgatherv");
    return out;
  }
  /// Gathers every rank's value on `root` (other ranks get an empty vector).
  template <class T>
  std::vector<T> gather(T value, int root = 0) const {
    std::vector<T> out(rank_ == root ? static_cast<std::size_t>(size_) : 0);
    check_mpi(MPI_Gather(&value, 1, mpi_type<T>(), out.data(), 1, mpi_type<T>(), root, comm_),
              "MPI_Gather");
    return out;
  }

  /// The [begin, end) share of `n` items owned by this rank in a block partition
  /// (the first n % size ranks get one more).
  std::pair<std::uint64_t, std::uint64_t> block_range(std::uint64_t n) const;

 private:
  static MPI_Op mpi_op(ReduceOp op);
  MPI_Comm comm_;
  int rank_ = 0;
  int size_ = 1;
};

/// Block partition of n items over `parts`: the [begin, end) range of part `index`.
std::pair<std::uint64_t, std::uint64_t> block_range(std::uint64_t n, int parts, int index);

}  // namespace kmim::dist
