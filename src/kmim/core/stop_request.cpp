#include "kmim/core/stop_request.hpp"

#include <atomic>

namespace kmim {
namespace {
// The one piece of process-wide state a signal handler may touch: a lock-free atomic (a plain
// sig_atomic_t would do for the flag; the atomic also orders it for the polling thread).
std::atomic<int> g_stop_signal{0};
static_assert(std::atomic<int>::is_always_lock_free, "signal handlers need a lock-free flag");

extern "C" void kmim_core_on_stop_request_signal(int signal_number) {
  int expected = 0;
  g_stop_signal.compare_exchange_strong(expected, signal_number);
}

void install(int signal_number, struct sigaction* previous) {
  struct sigaction action {};
  action.sa_handler = kmim_core_on_stop_request_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(signal_number, &action, previous);
}
}  // namespace

StopRequest::StopRequest() {
  g_stop_signal.store(0);
  install(SIGUSR1, &previous_usr1_);
  install(SIGTERM, &previous_term_);
}

StopRequest::~StopRequest() {
  sigaction(SIGUSR1, &previous_usr1_, nullptr);
  sigaction(SIGTERM, &previous_term_, nullptr);
}

bool StopRequest::requested() const { return g_stop_signal.load() != 0; }

int StopRequest::signal_number() const { return g_stop_signal.load(); }

}  // namespace kmim
