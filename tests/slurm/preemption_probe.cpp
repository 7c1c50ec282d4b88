// preemption_probe: a small MPI program that keeps the preemption contract of docs/cluster.md,
// so the Slurm tests can exercise signal forwarding, requeue and resume before kmim_pretrain
// exists. The contract, as every long-running kmim program keeps it:
//   - SIGUSR1 (forwarded by jobs/common.sh from the batch shell) asks for a checkpoint; the
//     program finishes its current step, all ranks agree on it, writes the checkpoint and exits
//     with code 75 ("checkpointed, requeue me");
//   - `--resume auto` continues from the checkpoint when one exists, else starts fresh;
//   - the final output is bit-identical to an uninterrupted run's.
//
// The work: a state vector of doubles, each element updated per step by a nonlinear map plus
// Philox noise keyed by (seed, step, element), so any lost or repeated step changes the result.
// Ranks own contiguous blocks of elements (block_range); the result does not depend on the rank
// count.
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "kmim/core/error.hpp"
#include "kmim/core/options.hpp"
#include "kmim/core/rng.hpp"
#include "kmim/dist/program.hpp"
#include "kmim/io/atomic_output.hpp"
#include "kmim/io/hdf5.hpp"

namespace {

/// Exit code of a program that wrote a checkpoint on request and wants to be requeued.
constexpr int kExitCheckpointed = 75;

volatile std::sig_atomic_t g_checkpoint_requested = 0;
extern "C" void request_checkpoint(int /*signal*/) { g_checkpoint_requested = 1; }

struct ProbeParams {
  std::int64_t steps = 40;       ///< steps to run
  std::int64_t elements = 4096;  ///< state vector length
  int step_ms = 100;             ///< sleep per step, so a test can signal mid-run
  std::uint64_t seed = 1;
  std::string out;               ///< result file (dataset "state", attribute "steps")
  std::string checkpoint;        ///< checkpoint file (dataset "state", attribute "step")
  std::string resume = "never";  ///< auto: continue from --checkpoint when it exists
};

void write_state(const std::filesystem::path& path, const std::vector<double>& state,
                 const char* step_attribute, std::int64_t step, const std::string& config) {
  kmim::io::AtomicOutput out(path);
  {
    auto file = kmim::io::create_file(out.temp_path());
    file.set_provenance("preemption_probe", config);
    file.write_dataset<double>("state", state, {state.size()});
    file.set_attribute<std::int64_t>(step_attribute, step);
  }
  out.commit();
}

int probe_main(kmim::dist::Communicator& comm, int argc, char** argv) {
  ProbeParams p;
  kmim::OptionSet opts("preemption_probe", "Test program keeping the kmim preemption contract.");
  opts.add("steps", p.steps, "steps to run")
      .add("elements", p.elements, "state vector length")
      .add("step-ms", p.step_ms, "milliseconds slept per step")
      .add("seed", p.seed, "noise seed")
      .add("out", p.out, "result file")
      .add("checkpoint", p.checkpoint, "checkpoint file")
      .add("resume", p.resume, "auto: continue from --checkpoint if it exists; never");
  if (!opts.parse(argc, argv)) return 0;
  opts.require("out", !p.out.empty(), "is required");
  opts.require("checkpoint", !p.checkpoint.empty(), "is required");
  opts.require("resume", p.resume == "auto" || p.resume == "never", "must be auto or never");
  opts.require("steps", p.steps >= 1, "must be at least 1");
  opts.require("elements", p.elements >= 1, "must be at least 1");
  std::signal(SIGUSR1, request_checkpoint);

  const auto n = static_cast<std::uint64_t>(p.elements);
  std::vector<double> state(n, 0.0);
  std::int64_t first_step = 0;
  if (p.resume == "auto" && std::filesystem::exists(p.checkpoint)) {
    auto file = kmim::io::open_file(p.checkpoint);
    state = file.read_dataset<double>("state");
    first_step = file.attribute<std::int64_t>("step");
    if (state.size() != n) {
      throw kmim::FileError(p.checkpoint, fmt::format("holds {} elements, --elements is {}",
                                                      state.size(), n));
    }
    if (comm.is_root()) fmt::print("preemption_probe: resumed from step {}\n", first_step);
  }
  const auto [begin, end] = comm.block_range(n);
  for (std::int64_t step = first_step; step < p.steps; ++step) {
    // Step boundary: every rank learns whether any rank was asked to checkpoint.
    if (comm.any(g_checkpoint_requested != 0)) {
      const auto mine = std::span<const double>(state).subspan(begin, end - begin);
      const auto full = comm.allgatherv(mine);
      if (comm.is_root()) {
        write_state(p.checkpoint, full, "step", step, opts.effective_ini());
        fmt::print("preemption_probe: checkpointed at step {}, exiting with {}\n", step,
                   kExitCheckpointed);
        std::fflush(stdout);
      }
      comm.barrier();
      return kExitCheckpointed;
    }
    for (std::uint64_t i = begin; i < end; ++i) {
      kmim::RandomStream noise(p.seed, kmim::stream_id({static_cast<std::uint64_t>(step), i}));
      state[i] = 0.9 * state[i] + std::sin(state[i]) + noise.normal();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(p.step_ms));
    if (comm.is_root()) {
      fmt::print("preemption_probe: completed step {}\n", step + 1);
      std::fflush(stdout);
    }
  }
  const auto full = comm.allgatherv(std::span<const double>(state).subspan(begin, end - begin));
  if (comm.is_root()) write_state(p.out, full, "steps", p.steps, opts.effective_ini());
  comm.barrier();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return kmim::dist::run_program("preemption_probe", argc, argv, probe_main);
}
