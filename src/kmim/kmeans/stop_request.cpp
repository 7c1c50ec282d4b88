#include "kmim/kmeans/stop_request.hpp"

namespace kmim::kmeans {
namespace {
// The one piece of process-wide state a signal handler may touch.
volatile std::sig_atomic_t g_stop_requested = 0;

extern "C" void on_stop_signal(int) { g_stop_requested = 1; }
}  // namespace

StopRequestSignal::StopRequestSignal() {
  g_stop_requested = 0;
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGUSR1, &action, &previous_);
}

StopRequestSignal::~StopRequestSignal() { sigaction(SIGUSR1, &previous_, nullptr); }

bool StopRequestSignal::requested() const { return g_stop_requested != 0; }

}  // namespace kmim::kmeans
