#include "kmim/dist/mpi.hpp"

#include <fmt/format.h>

#include "kmim/core/error.hpp"

namespace kmim::dist {

void check_mpi(int rc, const char* call) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  throw Error(fmt::format("{} failed: {}", call, std::string(text, static_cast<std::size_t>(len))));
}

MpiSession::MpiSession() {
  int argc = 0;
  char** argv = nullptr;
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    check_mpi(MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
    owns_ = true;
  }
  // Errors come back as return codes, which check_mpi turns into exceptions.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
}

MpiSession::MpiSession(int& argc, char**& argv) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    check_mpi(MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
    owns_ = true;
  }
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
}

MpiSession::~MpiSession() {
  if (!owns_) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

Communicator::Communicator() : Communicator(MPI_COMM_WORLD) {}

Communicator::Communicator(MPI_Comm comm) : comm_(comm) {
  check_mpi(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
  check_mpi(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
}

void Communicator::barrier() const {
  if (size_ > 1) check_mpi(MPI_Barrier(comm_), "MPI_Barrier");
}

bool Communicator::any(bool flag) const {
  return allreduce(static_cast<std::int32_t>(flag ? 1 : 0), ReduceOp::max) != 0;
}

std::string Communicator::bcast(const std::string& text, int root) const {
  if (size_ == 1) return text;
  auto n = bcast(static_cast<std::uint64_t>(text.size()), root);
  std::string out = rank_ == root ? text : std::string(n, '\0');
  bcast(std::span<char>(out.data(), out.size()), root);
  return out;
}

MPI_Op Communicator::mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum: return MPI_SUM;
    case ReduceOp::max: return MPI_MAX;
    case ReduceOp::min: return MPI_MIN;
  }
  return MPI_SUM;
}

std::pair<std::uint64_t, std::uint64_t> block_range(std::uint64_t n, int parts, int index) {
  const auto p = static_cast<std::uint64_t>(parts);
  const auto i = static_cast<std::uint64_t>(index);
  const std::uint64_t base = n / p, extra = n % p;
  const std::uint64_t begin = i * base + std::min(i, extra);
  return {begin, begin + base + (i < extra ? 1 : 0)};
}

std::pair<std::uint64_t, std::uint64_t> Communicator::block_range(std::uint64_t n) const {
  return dist::block_range(n, size_, rank_);
}

}  // namespace kmim::dist
