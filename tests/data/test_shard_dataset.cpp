// The shard writer and the reader together, in one process: shards of a generated tree are
// read back through ShardDataset and compared with decoding the source files directly; the
// epoch order, rank batches and the prefetcher are checked on top.
#define BOOST_TEST_MODULE kmim_shard_dataset
#include <boost/test/unit_test.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <set>

#include "kmim/core/error.hpp"
#include "kmim/core/log.hpp"
#include "kmim/data/image_decode.hpp"
#include "kmim/data/shard_writer.hpp"
#include "kmim/dist/mpi.hpp"
#include "kmim/io/hdf5.hpp"
#include "kmim/io/shard_dataset.hpp"
#include "test_tree.hpp"

namespace fs = std::filesystem;
using namespace kmim;

struct MpiFixture {
  dist::MpiSession session;
  MpiFixture() { log().configure(0, 1, LogLevel::warn); }
};
BOOST_TEST_GLOBAL_FIXTURE(MpiFixture);

namespace {

fs::path scratch(const std::string& name) {
  const char* base = std::getenv("KMIM_TEST_TMP");
  fs::path p = fs::path(base ? base : fs::temp_directory_path().string()) / ("kmim_shard_ds_" + name);
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

constexpr int kSize = 24;

/// A tree of 3 classes (with special and broken files) sharded into shards of 5 candidates.
struct Sharded {
  fs::path dir = scratch("sharded");
  fs::path root = dir / "tree";
  fs::path out = dir / "out";
  testing::TreeFacts facts;
  std::vector<data::SplitSummary> summaries;
  Sharded() {
    testing::TreeOptions o;
    o.large_image = false;  // the e2e test covers it; keep this test fast
    facts = testing::make_test_tree(root, o);
    data::ShardParams p;
    p.root = root.string();
    p.out = out.string();
    p.size = kSize;
    p.shard_size = 5;
    p.threads = 2;
    p.class_names = (root / "LOC_synset_mapping.txt").string();
    summaries = data::write_shards(dist::Communicator(), p, "size = 24\n");
  }
};

io::Image expected_crop(const fs::path& file) {
  data::ImageDecoder d;
  return data::square_center_crop(d.decode(data::read_file_bytes(file)), kSize);
}

}  // namespace

BOOST_AUTO_TEST_CASE(reader_returns_exactly_the_decoded_source_images) {
  Sharded s;
  BOOST_TEST(s.summaries.size() == 2u);
  BOOST_TEST(s.summaries[0].images == s.facts.train_good.size());
  BOOST_TEST(s.summaries[0].skipped == s.facts.train_broken.size());
  io::ShardDataset train(s.out / "train.h5");
  BOOST_TEST(train.size() == s.facts.train_good.size());
  BOOST_TEST(train.image_size() == kSize);
  BOOST_TEST(train.num_classes() == 3);
  BOOST_TEST(train.class_ids() == s.facts.class_ids, boost::test_tools::per_element());
  BOOST_TEST(train.class_names().at(2) == "class number 3, test");
  BOOST_TEST(train.fingerprint() == s.summaries[0].fingerprint);
  BOOST_TEST(train.num_shards() == (s.facts.train_good.size() + s.facts.train_broken.size() + 4) / 5);

  // Shard ranges tile [0, size) and some shard lost images to the broken files.
  std::uint64_t next = 0;
  bool shorter = false;
  for (std::size_t k = 0; k < train.num_shards(); ++k) {
    const auto [a, b] = train.shard_range(k);
    BOOST_TEST(a == next);
    shorter = shorter || (b - a < 5 && k + 1 < train.num_shards());
    next = b;
  }
  BOOST_TEST(next == train.size());
  BOOST_TEST(shorter);

  // Read everything with read_range, compare with direct decoding of the source file.
  std::vector<std::uint8_t> all(train.size() * train.image_bytes());
  std::vector<std::int32_t> labels(train.size());
  train.read_range(0, train.size(), all, labels);
  BOOST_TEST(labels == train.labels(), boost::test_tools::per_element());
  const auto paths = io::open_file(s.out / "train.h5").read_strings("paths");
  BOOST_REQUIRE_EQUAL(paths.size(), train.size());
  for (std::size_t i = 0; i < train.size(); ++i) {
    const io::Image want = expected_crop(s.root / paths[i]);
    BOOST_TEST_CONTEXT(paths[i]) {
      BOOST_TEST(std::equal(want.pixels.begin(), want.pixels.end(), all.begin() + static_cast<std::ptrdiff_t>(i * train.image_bytes())));
      BOOST_TEST(paths[i].find(train.class_ids()[static_cast<std::size_t>(labels[i])]) != std::string::npos);
    }
  }

  // read_indices: any order, duplicates, across shards.
  const std::vector<std::uint64_t> idx = {7, 0, 7, 3, 4, 5, train.size() - 1, 1, 2, 3};
  std::vector<std::uint8_t> got(idx.size() * train.image_bytes());
  std::vector<std::int32_t> got_labels(idx.size());
  train.read_indices(idx, got, got_labels);
  for (std::size_t k = 0; k < idx.size(); ++k) {
    BOOST_TEST(got_labels[k] == train.label(idx[k]));
    BOOST_TEST(std::equal(got.begin() + static_cast<std::ptrdiff_t>(k * train.image_bytes()),
                          got.begin() + static_cast<std::ptrdiff_t>((k + 1) * train.image_bytes()),
                          all.begin() + static_cast<std::ptrdiff_t>(idx[k] * train.image_bytes())));
  }
  // A tiny open-handle cap must not change results.
  train.set_max_open_shards(1);
  std::vector<std::uint8_t> again(got.size());
  train.read_indices(idx, again, {});
  BOOST_TEST(again == got);

  BOOST_CHECK_NO_THROW(train.verify());
  BOOST_CHECK_THROW(train.read_range(train.size() - 1, 2, all, {}), Error);
  std::vector<std::uint8_t> small(3);
  BOOST_CHECK_THROW(train.read_range(0, 1, small, {}), Error);
  const std::vector<std::uint64_t> bad = {train.size()};
  BOOST_CHECK_THROW(train.read_indices(bad, std::span<std::uint8_t>(all.data(), train.image_bytes()), {}), Error);

  // The skipped report lists exactly the broken files.
  std::ifstream tsv(s.out / "train_skipped.tsv");
  std::set<std::string> skipped;
  for (std::string line; std::getline(tsv, line);) skipped.insert(line.substr(0, line.find('\t')));
  BOOST_TEST(skipped == std::set<std::string>(s.facts.train_broken.begin(), s.facts.train_broken.end()),
             boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(reader_rejects_missing_changed_and_damaged_shards) {
  Sharded s;
  const fs::path manifest = s.out / "train.h5";
  const fs::path shard0 = io::ShardDataset(manifest).shard_path(0);
  BOOST_TEST(shard0.filename().string().find("train-00000-of-") == 0u);
  BOOST_REQUIRE(fs::exists(shard0));
  {  // damage one image byte in place: open() still passes (attributes), verify() fails
    const io::H5Object f = io::open_file(shard0, io::FileMode::read_write);
    const io::H5Dataset images = f.dataset("images");
    std::vector<std::uint8_t> row(images.row_size());
    images.read_rows<std::uint8_t>(0, 1, row);
    row[10] ^= 0xFF;
    images.write_rows<std::uint8_t>(0, 1, row);
  }
  {
    io::ShardDataset d(manifest);
    try {
      d.verify();
      BOOST_FAIL("damage not detected");
    } catch (const FileError& e) {
      BOOST_TEST(e.file() == shard0);
    }
  }
  {  // a changed checksum attribute: rejected on open, naming the shard
    const io::H5Object f = io::open_file(shard0, io::FileMode::read_write);
    f.set_attribute<std::uint32_t>("checksum", 12345u);
  }
  try {
    io::ShardDataset d(manifest);
    BOOST_FAIL("changed shard accepted");
  } catch (const FileError& e) {
    BOOST_TEST(e.file() == shard0);
  }
  fs::remove(shard0);
  try {
    io::ShardDataset d(manifest);
    BOOST_FAIL("missing shard accepted");
  } catch (const FileError& e) {
    BOOST_TEST(e.file() == shard0);
    BOOST_TEST(std::string(e.what()).find("missing") != std::string::npos);
  }
  BOOST_CHECK_THROW(io::ShardDataset(s.out / "nothing.h5"), FileError);
  BOOST_CHECK_THROW(io::ShardDataset(io::ShardDataset(s.out / "val.h5").shard_path(0)), FileError);
}

BOOST_AUTO_TEST_CASE(epoch_order_is_a_seeded_permutation) {
  const auto a = io::epoch_order(1000, 7, 3);
  const auto b = io::epoch_order(1000, 7, 3);
  const auto c = io::epoch_order(1000, 7, 4);
  const auto d = io::epoch_order(1000, 8, 3);
  BOOST_TEST(a == b);
  BOOST_TEST(a != c);
  BOOST_TEST(a != d);
  std::vector<std::uint64_t> sorted = a;
  std::sort(sorted.begin(), sorted.end());
  std::vector<std::uint64_t> iota(1000);
  std::iota(iota.begin(), iota.end(), 0);
  BOOST_TEST(sorted == iota);
}

BOOST_AUTO_TEST_CASE(rank_batches_cover_each_global_batch_exactly_for_any_rank_count) {
  const std::uint64_t n = 103, gb = 16;
  const auto order = io::epoch_order(n, 1, 0);
  BOOST_TEST(io::num_batches(n, gb, false) == 7u);
  BOOST_TEST(io::num_batches(n, gb, true) == 6u);
  for (int size : {1, 2, 3, 5, 16, 20}) {
    std::vector<std::uint64_t> seen;
    for (std::uint64_t b = 0; b < io::num_batches(n, gb, false); ++b) {
      std::vector<std::uint64_t> global;
      for (int r = 0; r < size; ++r) {
        const auto part = io::rank_batch_indices(order, b, gb, r, size);
        const auto [lo, hi] = dist::block_range(std::min(gb, n - b * gb), size, r);
        BOOST_TEST(part.size() == hi - lo);
        global.insert(global.end(), part.begin(), part.end());
      }
      // Concatenated in rank order, the parts are exactly the global batch.
      const auto first = order.begin() + static_cast<std::ptrdiff_t>(b * gb);
      BOOST_TEST(std::equal(global.begin(), global.end(), first));
      BOOST_TEST(global.size() == std::min(gb, n - b * gb));
      seen.insert(seen.end(), global.begin(), global.end());
    }
    BOOST_TEST(seen == order);
  }
  BOOST_CHECK_THROW(io::rank_batch_indices(order, 7, gb, 0, 1), Error);
  BOOST_CHECK_THROW(io::rank_batch_indices(order, 0, gb, 2, 2), Error);
}

BOOST_AUTO_TEST_CASE(prefetcher_delivers_in_order_and_rethrows) {
  Sharded s;
  io::ShardDataset train(s.out / "train.h5");
  const auto order = io::epoch_order(train.size(), 5, 0);
  std::vector<std::vector<std::uint64_t>> batches;
  for (std::uint64_t b = 0; b < io::num_batches(train.size(), 4, false); ++b)
    batches.push_back(io::rank_batch_indices(order, b, 4, 0, 1));
  {
    io::BatchPrefetcher pf(train, batches, 2);
    io::Batch batch;
    std::size_t k = 0;
    while (pf.next(batch)) {
      BOOST_REQUIRE(k < batches.size());
      BOOST_TEST(batch.sequence == k);
      BOOST_TEST(batch.indices == batches[k]);
      std::vector<std::uint8_t> want(batch.size() * train.image_bytes());
      train.read_indices(batch.indices, want, {});
      BOOST_TEST(batch.images == want);
      for (std::size_t i = 0; i < batch.size(); ++i) BOOST_TEST(batch.labels[i] == train.label(batch.indices[i]));
      ++k;
    }
    BOOST_TEST(k == batches.size());
    BOOST_TEST(!pf.next(batch));
  }
  {  // a bad index list: the batches before it arrive, then next() rethrows
    std::vector<std::vector<std::uint64_t>> bad = {{0, 1}, {train.size() + 5}, {2}};
    io::BatchPrefetcher pf(train, bad, 1);
    io::Batch batch;
    BOOST_TEST(pf.next(batch));
    BOOST_CHECK_THROW(pf.next(batch), Error);
  }
  {  // destroyed mid-sequence with an endless source: must not hang
    io::BatchPrefetcher pf(train, []() -> std::optional<std::vector<std::uint64_t>> {
      return std::vector<std::uint64_t>{0, 1, 2};
    });
    io::Batch batch;
    BOOST_TEST(pf.next(batch));
  }
}

BOOST_AUTO_TEST_CASE(checksum_is_standard_crc32) {
  io::shard_format::Checksum c;
  const std::string text = "123456789";
  c.add(std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()));
  BOOST_TEST(c.value() == 0xCBF43926u);  // the CRC-32 check value
  BOOST_TEST(io::shard_format::shard_file_name("val", 3, 12) == "val-00003-of-00012.h5");
}
