// The GPU smoke test: the device answers and runs kmim's sm_90 code correctly.
#define BOOST_TEST_MODULE kmim_gpu_device
#include "gpu_test_main.hpp"

#include "kmim/core/error.hpp"

BOOST_AUTO_TEST_CASE(devices_are_described_and_run_our_code) {
  const auto status = kmim::gpu::query_devices();
  BOOST_TEST(status.compiled);
  BOOST_TEST_REQUIRE(!status.devices.empty());
  for (const auto& d : status.devices) {
    BOOST_TEST(!d.name.empty());
    BOOST_TEST(d.memory_bytes > 0u);
    BOOST_TEST(d.compute_major >= 7);
    BOOST_CHECK_NO_THROW(kmim::gpu::run_device_self_check(d.index));
  }
}
