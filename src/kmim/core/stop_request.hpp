// Checkpoint-and-exit on request (SPEC §6: a pretraining run must survive preemption). Slurm
// sends SIGUSR1 before a time limit or a preemption (jobs/common.sh forwards it to the
// program) and SIGTERM when it cancels or preempts a job without warning time. While a
// StopRequest is alive, either signal only sets a flag; the program polls requested() at its
// next safe point (a step boundary), agrees on it across ranks, writes its checkpoint and exits
// with kExitCheckpointed so that the job script requeues it and the rerun resumes.
#pragma once

#include <csignal>

namespace kmim {

/// Exit code of a run that stopped after checkpointing on request ("requeue me"; the value the
/// job scripts in jobs/ test for).
inline constexpr int kExitCheckpointed = 75;

class StopRequest {
 public:
  /// Installs the SIGUSR1 and SIGTERM handlers (the previous ones are restored by the
  /// destructor) and clears the flag.
  StopRequest();
  ~StopRequest();
  StopRequest(const StopRequest&) = delete;
  StopRequest& operator=(const StopRequest&) = delete;

  /// True once SIGUSR1 or SIGTERM arrived in this process.
  bool requested() const;
  /// The signal that arrived first (0: none yet).
  int signal_number() const;

 private:
  struct sigaction previous_usr1_ {};
  struct sigaction previous_term_ {};
};

}  // namespace kmim
