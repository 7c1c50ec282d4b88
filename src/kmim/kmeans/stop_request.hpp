// Checkpoint-and-exit on request (SPEC §6: survive preemption). Slurm jobs send SIGUSR1 before
// the time limit or a preemption (jobs/common.sh forwards it to the program); while a
// StopRequestSignal is alive, SIGUSR1 only sets a flag, and kmim_kmeans checks it (on every rank,
// agreed through an allreduce) at the next iteration/pass boundary, writes its checkpoint and
// exits with kExitCheckpointed (75) so that the job script requeues it with --resume.
#pragma once

#include <csignal>

namespace kmim::kmeans {

/// Exit code of a run that stopped after checkpointing on request ("requeue me", jobs/common.sh).
inline constexpr int kExitCheckpointed = 75;

class StopRequestSignal {
 public:
  /// Installs the SIGUSR1 handler (the previous one is restored by the destructor).
  StopRequestSignal();
  ~StopRequestSignal();
  StopRequestSignal(const StopRequestSignal&) = delete;
  StopRequestSignal& operator=(const StopRequestSignal&) = delete;

  /// True once SIGUSR1 arrived in this process.
  bool requested() const;

 private:
  struct sigaction previous_ {};
};

}  // namespace kmim::kmeans
