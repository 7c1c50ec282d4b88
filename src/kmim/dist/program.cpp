#include "kmim/dist/program.hpp"

#include <cstdio>
#include <exception>
#include <new>
#include <memory>
#include <string>

#include <fmt/format.h>

#include "kmim/core/error.hpp"
#include "kmim/core/log.hpp"

namespace kmim::dist {
namespace {

void print_error_line(std::string_view name, const Communicator* comm, std::string_view message) {
  std::string line = comm && comm->size() > 1
                         ? fmt::format("{}: error: [rank {}/{}] {}\n", name, comm->rank(),
                                       comm->size(), message)
                         : fmt::format("{}: error: {}\n", name, message);
  std::fputs(line.c_str(), stderr);
  std::fflush(stderr);
}

[[noreturn]] void abort_job(const Communicator& comm) {
  MPI_Abort(comm.get(), kExitError);
  std::_Exit(kExitError);
}

}  // namespace

int run_program(std::string_view name, int argc, char** argv, const ProgramBody& body) {
  std::unique_ptr<MpiSession> session;
  std::unique_ptr<Communicator> comm;
  try {
    session = std::make_unique<MpiSession>(argc, argv);
    comm = std::make_unique<Communicator>();
    Logger::global().configure(comm->rank(), comm->size(), LogLevel::info);
    Logger::global().configure_from_environment();
    return body(*comm, argc, argv);
  } catch (const UsageError& e) {
    if (!comm || comm->is_root()) print_error_line(name, nullptr, e.what());
    return kExitError;
  } catch (const std::bad_alloc&) {
    print_error_line(name, comm.get(), "out of memory (lower the batch size or --memory-limit)");
  } catch (const std::exception& e) {
    print_error_line(name, comm.get(), e.what());
  }
  if (comm && comm->size() > 1) abort_job(*comm);
  return kExitError;
}

}  // namespace kmim::dist
