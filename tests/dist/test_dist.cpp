// MPI collectives through kmim::dist::Communicator. Run by CTest under mpirun with 1, 2 and 3
// ranks; every expected value is computed from the rank count, so the same test checks all.
#define BOOST_TEST_MODULE kmim_dist
#include <boost/test/unit_test.hpp>

#include <numeric>

#include "kmim/dist/mpi.hpp"

using namespace kmim::dist;

struct MpiFixture {
  MpiSession session;
};
BOOST_TEST_GLOBAL_FIXTURE(MpiFixture);

BOOST_AUTO_TEST_CASE(allreduce_sums_max_min) {
  Communicator comm;
  const int n = comm.size(), r = comm.rank();
  std::vector<double> v = {double(r), 1.0, double(r * r)};
  comm.allreduce(std::span<double>(v));
  BOOST_TEST(v[0] == n * (n - 1) / 2.0);
  BOOST_TEST(v[1] == double(n));
  std::vector<std::int64_t> c = {r + 1, -r};
  comm.allreduce(std::span<std::int64_t>(c), ReduceOp::max);
  BOOST_TEST(c[0] == n);
  BOOST_TEST(c[1] == 0);
  BOOST_TEST(comm.allreduce(float(r), ReduceOp::min) == 0.0f);
  BOOST_TEST(comm.allreduce(std::uint64_t(1)) == std::uint64_t(n));
  BOOST_TEST(comm.any(r == n - 1));
  BOOST_TEST(!comm.any(false));
}

BOOST_AUTO_TEST_CASE(bcast_and_gathers) {
  Communicator comm;
  const int n = comm.size(), r = comm.rank();
  std::vector<float> v(4, float(r));
  if (comm.is_root()) v = {1, 2, 3, 4};
  comm.bcast(std::span<float>(v));
  BOOST_TEST((v == std::vector<float>{1, 2, 3, 4}));
  BOOST_TEST(comm.bcast(comm.is_root() ? std::string("from root ü") : std::string("x")) ==
             "from root ü");
  BOOST_TEST(comm.bcast(std::int32_t(r + 5), n - 1) == n - 1 + 5);
  const auto all = comm.allgather(std::int32_t(10 * r));
  BOOST_TEST(all.size() == std::size_t(n));
  for (int i = 0; i < n; ++i) BOOST_TEST(all[std::size_t(i)] == 10 * i);
  // Rank i contributes i+1 copies of i.
  std::vector<std::int64_t> mine(std::size_t(r + 1), r);
  const auto cat = comm.allgatherv(std::span<const std::int64_t>(mine));
  BOOST_TEST(cat.size() == std::size_t(n * (n + 1) / 2));
  std::size_t pos = 0;
  for (int i = 0; i < n; ++i)
    for (int j = 0; j <= i; ++j) BOOST_TEST(cat[pos++] == i);
  const auto g = comm.gather(double(r));
  BOOST_TEST(g.size() == (comm.is_root() ? std::size_t(n) : 0u));
  comm.barrier();
}

BOOST_AUTO_TEST_CASE(block_partition_covers_everything_once) {
  Communicator comm;
  for (std::uint64_t items : {0ull, 1ull, 2ull, 7ull, 100ull}) {
    const auto [b, e] = comm.block_range(items);
    const auto begins = comm.allgather(b);
    const auto ends = comm.allgather(e);
    BOOST_TEST(begins.front() == 0u);
    BOOST_TEST(ends.back() == items);
    for (std::size_t i = 1; i < begins.size(); ++i) BOOST_TEST(begins[i] == ends[i - 1]);
    for (std::size_t i = 0; i < begins.size(); ++i)
      BOOST_TEST(ends[i] - begins[i] <= items / std::uint64_t(comm.size()) + 1);
  }
  BOOST_TEST((block_range(10, 3, 0) == std::pair<std::uint64_t, std::uint64_t>{0, 4}));
  BOOST_TEST((block_range(10, 3, 2) == std::pair<std::uint64_t, std::uint64_t>{7, 10}));
}
