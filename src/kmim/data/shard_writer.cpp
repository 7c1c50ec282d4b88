#include "kmim/data/shard_writer.hpp"

#include <fcntl.h>
#include <omp.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <future>
#include <map>
#include <new>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#include "kmim/core/log.hpp"
#include "kmim/core/progress.hpp"
#include "kmim/core/rng.hpp"
#include "kmim/data/folder_scan.hpp"
#include "kmim/data/image_decode.hpp"
#include "kmim/io/atomic_output.hpp"
#include "kmim/io/hdf5.hpp"
#include "kmim/io/shard_dataset.hpp"

namespace kmim::data {
namespace fs = std::filesystem;
namespace sf = io::shard_format;

namespace {

// stream_id purpose tag of the write-time shuffle ("shard_sh" in ASCII).
constexpr std::uint64_t kShufflePurpose = 0x73686172645f7368ull;

constexpr const char* kResizeText =
    "short side to image_size, antialiased bicubic (Catmull-Rom, a=-0.5, clamped edges; as "
    "kmim::io::resize_short_side, computed over the crop window only)";
constexpr const char* kCropText = "centre crop image_size x image_size (torchvision CenterCrop offsets)";

/// Everything rank 0 found while planning, broadcast to every rank.
struct Plan {
  std::string root;  // canonical
  ClassTable classes;
  struct Split {
    std::string name;
    std::vector<ImageEntry> candidates;    // shard order (sorted or permuted)
    std::vector<std::string> unlabelled;   // only on rank 0
    std::string layout;
  };
  std::vector<Split> splits;
};

std::string one_line(std::string text) {
  for (char& c : text)
    if (c == '\t' || c == '\n' || c == '\r') c = ' ';
  return text;
}

// ---- plan serialisation (rank 0 → all) -----------------------------------------------------

std::string serialise(const Plan& plan) {
  std::string s;
  s += plan.root + "\n";
  s += fmt::format("{}\n", plan.classes.ids.size());
  for (std::size_t c = 0; c < plan.classes.ids.size(); ++c)
    s += plan.classes.ids[c] + "\t" +
         (plan.classes.names.empty() ? std::string("\x01") : one_line(plan.classes.names[c])) + "\n";
  s += fmt::format("{}\n", plan.splits.size());
  for (const auto& split : plan.splits) {
    s += fmt::format("{}\t{}\t{}\n", split.name, split.candidates.size(), split.layout);
    for (const auto& e : split.candidates) s += fmt::format("{}\t{}\n", e.label, e.path);
  }
  return s;
}

Plan deserialise(const std::string& text) {
  std::istringstream in(text);
  Plan plan;
  std::string line;
  std::getline(in, plan.root);
  std::getline(in, line);
  const std::size_t num_classes = std::stoull(line);
  bool have_names = false;
  for (std::size_t c = 0; c < num_classes; ++c) {
    std::getline(in, line);
    const auto tab = line.find('\t');
    plan.classes.ids.push_back(line.substr(0, tab));
    const std::string name = line.substr(tab + 1);
    if (name != "\x01") have_names = true;
    plan.classes.names.push_back(name == "\x01" ? std::string() : name);
  }
  if (!have_names) plan.classes.names.clear();
  std::getline(in, line);
  const std::size_t num_splits = std::stoull(line);
  for (std::size_t s = 0; s < num_splits; ++s) {
    std::getline(in, line);
    Plan::Split split;
    const auto t1 = line.find('\t'), t2 = line.find('\t', t1 + 1);
    split.name = line.substr(0, t1);
    const std::size_t n = std::stoull(line.substr(t1 + 1, t2 - t1 - 1));
    split.layout = line.substr(t2 + 1);
    split.candidates.resize(n);
    for (auto& e : split.candidates) {
      std::getline(in, line);
      const auto tab = line.find('\t');
      e.label = static_cast<std::int32_t>(std::stol(line.substr(0, tab)));
      e.path = line.substr(tab + 1);
    }
    plan.splits.push_back(std::move(split));
  }
  return plan;
}

Plan make_plan(const ShardParams& p, const std::vector<std::string>& split_names) {
  Plan plan;
  std::error_code ec;
  const fs::path root(p.root);
  // Class names: --class-names, else <root>/LOC_synset_mapping.txt when present.
  fs::path names_file = p.class_names;
  if (names_file.empty() && fs::is_regular_file(root / "LOC_synset_mapping.txt", ec))
    names_file = root / "LOC_synset_mapping.txt";
  plan.classes = make_class_table(root, p.classes, names_file);
  if (!p.val_labels.empty() && !fs::is_regular_file(p.val_labels, ec))
    throw FileError(p.val_labels, "the label file (--val-labels) does not exist");
  plan.root = fs::canonical(root, ec).string();
  if (ec) throw FileError(root, "cannot resolve the data root: " + ec.message());
  for (const auto& name : split_names) {
    SplitScan scan = scan_split(root, name, plan.classes, p.val_labels);
    Plan::Split split{name, std::move(scan.images), std::move(scan.unlabelled), scan.layout};
    if (p.shuffle) {
      const auto perm = random_permutation(
          split.candidates.size(), p.seed, stream_id({kShufflePurpose, sf::Fnv1a64().add(name).value()}));
      std::vector<ImageEntry> shuffled(split.candidates.size());
      for (std::size_t i = 0; i < perm.size(); ++i) shuffled[i] = split.candidates[perm[i]];
      split.candidates = std::move(shuffled);
    }
    plan.splits.push_back(std::move(split));
  }
  // The output folders: checked now so that a bad --out fails before any decoding.
  io::ensure_writable_directory(p.out);
  for (const auto& name : split_names) io::ensure_writable_directory(fs::path(p.out) / name);
  return plan;
}

// ---- digests -------------------------------------------------------------------------------

/// The options that decide a split's content and storage (not threads, paths or rank count).
std::string content_digest(const ShardParams& p, const Plan& plan, const std::string& split) {
  sf::Fnv1a64 h;
  h.add("kmim_shard").add_u64(sf::kVersion).add(split).add_u64(split.size());
  h.add_u64(static_cast<std::uint64_t>(p.size)).add_u64(static_cast<std::uint64_t>(p.shard_size));
  h.add_u64(p.shuffle ? 1 : 0).add_u64(p.shuffle ? p.seed : 0);
  h.add_u64(static_cast<std::uint64_t>(p.compression));
  h.add(kResizeText).add(kCropText);
  h.add_u64(plan.classes.ids.size());
  for (const auto& id : plan.classes.ids) h.add(id).add_u64(id.size());
  return h.hex();
}

std::string candidates_digest(const std::vector<ImageEntry>& c, std::size_t first, std::size_t last) {
  sf::Fnv1a64 h;
  h.add_u64(last - first);
  for (std::size_t i = first; i < last; ++i)
    h.add(c[i].path).add_u64(c[i].path.size()).add_u64(static_cast<std::uint64_t>(c[i].label));
  return h.hex();
}

// ---- one shard -----------------------------------------------------------------------------

struct ShardJob {
  std::string split;
  std::size_t index = 0;
  std::size_t count = 0;  // shards in the split
  std::size_t first = 0;  // candidate range [first, last)
  std::size_t last = 0;
  fs::path file;
  std::string content_digest;
  std::string candidates_digest;
};

struct Skipped {
  std::string path;
  std::string reason;
};

struct ShardResult {
  std::uint64_t images = 0;
  std::uint32_t checksum = 0;
  std::vector<std::uint64_t> class_counts;
  std::vector<Skipped> skipped;
  bool reused = false;
};

/// A complete shard from an earlier run that matches this job and whose data match its
/// checksum, or nullopt (with the reason in `why`).
std::optional<ShardResult> load_complete_shard(const ShardJob& job, const Plan& plan, int size,
                                               std::string& why) {
  std::error_code ec;
  if (!fs::exists(job.file, ec)) {
    why = "not written yet";
    return std::nullopt;
  }
  try {
    std::lock_guard lock(io::hdf5_mutex());
    const io::H5Object f = io::open_file(job.file);
    const auto check = [&](bool ok, const char* what) {
      if (!ok) throw Error(what);
    };
    check(f.has_attribute("format") && f.string_attribute("format") == sf::kShardKind, "not a kmim shard");
    check(f.attribute<std::int32_t>("format_version") == sf::kVersion, "other format version");
    check(f.string_attribute("content_digest") == job.content_digest, "written with other options");
    check(f.string_attribute("candidates_digest") == job.candidates_digest, "the input file list changed");
    check(f.string_attribute("root") == plan.root, "written from another data root");
    check(f.attribute<std::uint64_t>("first_candidate") == job.first &&
              f.attribute<std::uint64_t>("num_candidates") == job.last - job.first,
          "covers other candidates");
    ShardResult r;
    r.images = f.attribute<std::uint64_t>("num_images");
    r.checksum = f.attribute<std::uint32_t>("checksum");
    const io::H5Dataset images = f.dataset("images");
    const io::H5Dataset labels = f.dataset("labels");
    const std::vector<hsize_t> want{r.images, static_cast<hsize_t>(size), static_cast<hsize_t>(size), 3};
    check(images.dims() == want && images.holds<std::uint8_t>(), "images have the wrong shape");
    check(labels.dims() == std::vector<hsize_t>{r.images} && labels.holds<std::int32_t>(),
          "labels have the wrong shape");
    check(sf::compute_shard_checksum(images, labels) == r.checksum, "data do not match the checksum");
    r.class_counts.assign(plan.classes.ids.size(), 0);
    for (const std::int32_t l : labels.read<std::int32_t>()) {
      check(l >= 0 && static_cast<std::size_t>(l) < r.class_counts.size(), "label out of range");
      ++r.class_counts[static_cast<std::size_t>(l)];
    }
    const auto paths = f.read_strings("skipped_paths");
    const auto reasons = f.read_strings("skipped_reasons");
    check(paths.size() == reasons.size(), "skipped lists differ in length");
    check(r.images + paths.size() == job.last - job.first, "image and skip counts do not add up");
    for (std::size_t i = 0; i < paths.size(); ++i) r.skipped.push_back({paths[i], reasons[i]});
    r.reused = true;
    return r;
  } catch (const std::exception& e) {
    why = e.what();
    return std::nullopt;
  }
}

/// The images dataset [n, H, W, 3] uint8: one image per chunk (a batch read touches exactly the
/// chunks it needs), gzip when asked for; contiguous when empty (HDF5 cannot chunk 0 rows).
io::H5Dataset create_images_dataset(const io::H5Object& file, hsize_t n, int size, int compression) {
  const hsize_t s = static_cast<hsize_t>(size);
  const hsize_t dims[4] = {n, s, s, 3};
  io::H5Id space(H5Screate_simple(4, dims, nullptr));
  io::H5Id dcpl(H5Pcreate(H5P_DATASET_CREATE));
  if (n > 0) {
    const hsize_t chunk[4] = {1, s, s, 3};
    H5Pset_chunk(dcpl.get(), 4, chunk);
    if (compression > 0) H5Pset_deflate(dcpl.get(), static_cast<unsigned>(compression));
  }
  const hid_t id = H5Dcreate2(file.id(), "images", H5T_STD_U8LE, space.get(), H5P_DEFAULT,
                              dcpl.get(), H5P_DEFAULT);
  if (id < 0) file.throw_error("images", "cannot create dataset");
  return io::H5Dataset(io::H5Id(id), file.file(), "/images", false);
}


/// Builds an HDF5 file in memory (core driver, no backing store) with `fill`, then writes its
/// bytes under a temporary name and renames it into place (AtomicOutput::commit fsyncs first). HDF5 itself never
/// writes to disk here: a full disk or a file-size limit is a plain write() error we report,
/// instead of an HDF5 file that fails to close (which leaves the library in a state that
/// crashes at exit). Peak memory: about twice the file size.
template <class Fill>
void write_hdf5_atomically(const fs::path& final_path, std::size_t size_hint, Fill&& fill) {
  std::vector<std::uint8_t> bytes;
  {
    std::lock_guard lock(io::hdf5_mutex());
    io::H5Id fapl(H5Pcreate(H5P_FILE_ACCESS));
    H5Pset_fapl_core(fapl.get(), std::max<std::size_t>(size_hint, std::size_t{1} << 20), false);
    const fs::path name = io::partial_path(final_path);
    const hid_t id = H5Fcreate(name.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get());
    if (id < 0) throw FileError(final_path, "cannot create an HDF5 file in memory");
    const io::H5Object f(io::H5Id(id), final_path, "/", false);
    fill(f);
    if (H5Fflush(f.id(), H5F_SCOPE_GLOBAL) < 0) throw FileError(final_path, "cannot finish the HDF5 file");
    const ssize_t n = H5Fget_file_image(f.id(), nullptr, 0);
    if (n <= 0) throw FileError(final_path, "cannot take the HDF5 file image");
    bytes.resize(static_cast<std::size_t>(n));
    if (H5Fget_file_image(f.id(), bytes.data(), bytes.size()) != n)
      throw FileError(final_path, "cannot take the HDF5 file image");
  }
  io::AtomicOutput out(final_path);
  {
    const int fd = ::open(out.temp_path().c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) throw FileError(final_path, system_message("cannot create", errno));
    std::size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t w = ::write(fd, bytes.data() + done, bytes.size() - done);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        const int err = w < 0 ? errno : ENOSPC;
        ::close(fd);
        throw FileError(final_path, system_message("cannot write (disk full?)", err));
      }
      done += static_cast<std::size_t>(w);
    }
    if (::close(fd) != 0) throw FileError(final_path, system_message("cannot write (disk full?)", errno));
  }
  out.commit();
}

/// A shard's decoded content, packed in candidate order, waiting to be written.
struct DecodedShard {
  std::vector<std::uint8_t> images;  // [n, H, W, 3]; the capacity holds a whole shard
  std::vector<std::int32_t> labels;
  std::vector<std::string> paths;
  ShardResult result;  // everything but the checksum
};

/// Processes this rank's shards: decodes shard k (OpenMP threads) while a background task
/// writes shard k-1 (checksum, HDF5 image, write, fsync, rename), so the file system's latency
/// overlaps the decoding. Two shard buffers at most; results are collected by finish().
class ShardWorker {
 public:
  ShardWorker(const ShardParams& p, const Plan& plan, int threads, std::string config_ini)
      : p_(p), plan_(plan), threads_(threads), config_ini_(std::move(config_ini)),
        decoders_(static_cast<std::size_t>(threads)) {}
  ~ShardWorker() {
    if (pending_.valid()) pending_.wait();  // never leave a writer running (errors are moot here)
  }
  ShardWorker(const ShardWorker&) = delete;
  ShardWorker& operator=(const ShardWorker&) = delete;

  void run(const ShardJob& job, const std::vector<ImageEntry>& candidates) {
    std::string why;
    if (auto done = load_complete_shard(job, plan_, p_.size, why)) {
      if (p_.strict && !done->skipped.empty())
        throw FileError(fs::path(p_.root) / done->skipped.front().path,
                        fmt::format("{} (--strict; recorded in {})", done->skipped.front().reason,
                                    job.file.string()));
      log().debug("{}: complete and verified, reused", job.file.string());
      results_[job.index] = std::move(*done);
      return;
    }
    if (why != "not written yet") log().warn("{}: rewriting ({})", job.file.filename().string(), why);
    const auto t0 = std::chrono::steady_clock::now();
    DecodedShard shard = decode(job, candidates, take_buffer());
    const auto t1 = std::chrono::steady_clock::now();
    collect();  // the previous shard's write: at most one in flight
    log().debug("{}: decoded in {:.3f} s, waited {:.3f} s for the previous write",
                job.file.filename().string(), std::chrono::duration<double>(t1 - t0).count(),
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count());
    pending_index_ = job.index;
    pending_ = std::async(std::launch::async, [this, job, d = std::move(shard)]() mutable {
      write(job, d);
      return d;
    });
  }

  /// Waits for the last write; returns every shard's result (by shard index).
  std::map<std::size_t, ShardResult> finish() {
    collect();
    return std::move(results_);
  }

 private:
  std::vector<std::uint8_t> take_buffer() {
    if (spare_.empty()) return {};
    std::vector<std::uint8_t> b = std::move(spare_.back());
    spare_.pop_back();
    return b;
  }

  void collect() {
    if (!pending_.valid()) return;
    DecodedShard done = pending_.get();  // rethrows a write error
    results_[pending_index_] = std::move(done.result);
    spare_.push_back(std::move(done.images));
  }

  DecodedShard decode(const ShardJob& job, const std::vector<ImageEntry>& candidates,
                      std::vector<std::uint8_t> buffer) {
    const std::size_t n = job.last - job.first;
    const std::size_t bytes = static_cast<std::size_t>(p_.size) * static_cast<std::size_t>(p_.size) * 3;
    buffer.resize(n * bytes);  // bounded by --shard-size, reused across shards
    std::vector<std::string> failure(n);
    std::vector<char> ok(n, 0);
    bool out_of_memory = false;
    const fs::path root(plan_.root);

#pragma omp parallel for num_threads(threads_) schedule(dynamic, 1)
    for (std::size_t i = 0; i < n; ++i) {
      ImageDecoder& decoder = decoders_[static_cast<std::size_t>(omp_get_thread_num())];
      const ImageEntry& entry = candidates[job.first + i];
      try {
        const std::vector<std::uint8_t> file = read_file_bytes(root / entry.path);
        const io::Image crop = square_center_crop(decoder.decode(file), p_.size);
        std::memcpy(buffer.data() + i * bytes, crop.pixels.data(), bytes);
        ok[i] = 1;
      } catch (const std::bad_alloc&) {
#pragma omp atomic write
        out_of_memory = true;
      } catch (const std::exception& e) {
        failure[i] = one_line(e.what());
      }
    }
    if (out_of_memory) throw std::bad_alloc();

    // Pack the decoded images in candidate order.
    DecodedShard d;
    ShardResult& r = d.result;
    r.class_counts.assign(plan_.classes.ids.size(), 0);
    for (std::size_t i = 0; i < n; ++i) {
      const ImageEntry& entry = candidates[job.first + i];
      if (!ok[i]) {
        if (p_.strict) throw FileError(root / entry.path, failure[i] + " (--strict)");
        r.skipped.push_back({entry.path, failure[i]});
        continue;
      }
      const std::size_t k = d.labels.size();
      if (k != i) std::memmove(buffer.data() + k * bytes, buffer.data() + i * bytes, bytes);
      d.labels.push_back(entry.label);
      d.paths.push_back(entry.path);
      ++r.class_counts[static_cast<std::size_t>(entry.label)];
    }
    r.images = d.labels.size();
    buffer.resize(r.images * bytes);  // keeps the capacity for the next shard
    d.images = std::move(buffer);
    return d;
  }

  /// Runs on the background task: checksum, HDF5 file image, atomic write.
  void write(const ShardJob& job, DecodedShard& d) const {
    const auto t0 = std::chrono::steady_clock::now();
    ShardResult& r = d.result;
    const std::span<const std::uint8_t> images(d.images);
    sf::Checksum sum;
    sum.add(images);
    sum.add_labels(d.labels);
    r.checksum = sum.value();
    const std::size_t n = job.last - job.first;

    write_hdf5_atomically(job.file, images.size() + (std::size_t{1} << 20), [&](const io::H5Object& f) {
      f.set_provenance("kmim_shard", config_ini_);
      f.set_attribute("format", sf::kShardKind);
      f.set_attribute<std::int32_t>("format_version", sf::kVersion);
      f.set_attribute("split", job.split);
      f.set_attribute<std::uint64_t>("shard_index", job.index);
      f.set_attribute<std::uint64_t>("num_shards", job.count);
      f.set_attribute<std::uint64_t>("first_candidate", job.first);
      f.set_attribute<std::uint64_t>("num_candidates", n);
      f.set_attribute<std::uint64_t>("num_images", r.images);
      f.set_attribute<std::uint64_t>("num_skipped", r.skipped.size());
      f.set_attribute<std::int32_t>("image_size", p_.size);
      f.set_attribute<std::uint32_t>("checksum", r.checksum);
      f.set_attribute("checksum_algorithm", sf::kChecksumAlgorithm);
      f.set_attribute("content_digest", job.content_digest);
      f.set_attribute("candidates_digest", job.candidates_digest);
      f.set_attribute("root", plan_.root);
      f.set_attribute("layout", "images: uint8 [n, H, W, 3] RGB (HWC), one image per chunk");
      f.set_attribute("resize", kResizeText);
      f.set_attribute("crop", kCropText);
      f.set_attribute<std::int32_t>("compression", p_.compression);
      const io::H5Dataset ds = create_images_dataset(f, r.images, p_.size, p_.compression);
      if (r.images > 0) ds.write_rows<std::uint8_t>(0, r.images, images);
      f.write_dataset<std::int32_t>("labels", d.labels, {r.images});
      f.write_strings("paths", d.paths);
      f.write_strings("class_ids", plan_.classes.ids);
      if (!plan_.classes.names.empty()) f.write_strings("class_names", plan_.classes.names);
      std::vector<std::string> skipped_paths, skipped_reasons;
      for (const auto& s : r.skipped) {
        skipped_paths.push_back(s.path);
        skipped_reasons.push_back(s.reason);
      }
      f.write_strings("skipped_paths", skipped_paths);
      f.write_strings("skipped_reasons", skipped_reasons);
    });
    log().debug("{}: written in {:.3f} s", job.file.filename().string(),
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }

  const ShardParams& p_;
  const Plan& plan_;
  int threads_;
  std::string config_ini_;
  std::vector<ImageDecoder> decoders_;
  std::vector<std::vector<std::uint8_t>> spare_;
  std::future<DecodedShard> pending_;
  std::size_t pending_index_ = 0;
  std::map<std::size_t, ShardResult> results_;
};

// ---- manifest ------------------------------------------------------------------------------

struct SplitResults {
  std::vector<std::uint64_t> counts;      // per shard
  std::vector<std::uint32_t> checksums;   // per shard
  std::vector<std::uint64_t> class_counts;
  std::vector<std::vector<Skipped>> skipped;  // per shard
  std::size_t reused = 0;
};

void write_manifest(const fs::path& file, const ShardParams& p, const Plan& plan,
                    const Plan::Split& split, const std::vector<ShardJob>& jobs,
                    const SplitResults& res, const std::string& digest,
                    const std::string& fingerprint, const std::string& config_ini) {
  const std::size_t num_shards = jobs.size();
  std::vector<std::uint64_t> offsets(num_shards + 1, 0);
  for (std::size_t s = 0; s < num_shards; ++s) offsets[s + 1] = offsets[s] + res.counts[s];
  const std::uint64_t total = offsets.back();

  // The stored images' paths, in order: every shard's candidates minus its skipped files.
  std::vector<std::string> paths;
  paths.reserve(total);
  std::vector<std::string> shard_files;
  std::uint64_t skipped = 0;
  for (std::size_t s = 0; s < num_shards; ++s) {
    std::set<std::string> bad;
    for (const auto& k : res.skipped[s]) bad.insert(k.path);
    skipped += bad.size();
    for (std::size_t i = jobs[s].first; i < jobs[s].last; ++i)
      if (!bad.count(split.candidates[i].path)) paths.push_back(split.candidates[i].path);
    shard_files.push_back(split.name + "/" + jobs[s].file.filename().string());
  }
  if (paths.size() != total) throw Error("internal: manifest paths do not match the shard counts");

  write_hdf5_atomically(file, paths.size() * 64 + (std::size_t{1} << 20), [&](const io::H5Object& f) {
    f.set_provenance("kmim_shard", config_ini);
    f.set_attribute("format", sf::kManifestKind);
    f.set_attribute<std::int32_t>("format_version", sf::kVersion);
    f.set_attribute("split", split.name);
    f.set_attribute<std::uint64_t>("num_images", total);
    f.set_attribute<std::int32_t>("num_classes", static_cast<std::int32_t>(plan.classes.ids.size()));
    f.set_attribute<std::int32_t>("image_size", p.size);
    f.set_attribute<std::uint64_t>("num_shards", num_shards);
    f.set_attribute<std::int32_t>("shard_size", p.shard_size);
    f.set_attribute<std::uint64_t>("num_candidates", split.candidates.size());
    f.set_attribute<std::uint64_t>("num_skipped", skipped + split.unlabelled.size());
    f.set_attribute("checksum_algorithm", sf::kChecksumAlgorithm);
    f.set_attribute("content_digest", digest);
    f.set_attribute("fingerprint", fingerprint);
    f.set_attribute("root", plan.root);
    f.set_attribute("input_layout", split.layout);
    f.set_attribute("order", p.shuffle ? fmt::format("shuffled (seed {})", p.seed)
                                       : std::string("sorted by (label, path)"));
    f.set_attribute("resize", kResizeText);
    f.set_attribute("crop", kCropText);

    // Virtual datasets over the shards; source names are relative to this file's folder, so
    // the output folder can be moved as a whole.
    const hsize_t s = static_cast<hsize_t>(p.size);
    const auto make_vds = [&](const char* name, hid_t type, int rank, const hsize_t* row_dims) {
      std::vector<hsize_t> dims(row_dims, row_dims + rank);
      dims[0] = total;
      io::H5Id vspace(H5Screate_simple(rank, dims.data(), nullptr));
      io::H5Id dcpl(H5Pcreate(H5P_DATASET_CREATE));
      for (std::size_t k = 0; k < num_shards; ++k) {
        if (res.counts[k] == 0) continue;
        std::vector<hsize_t> src = dims, start(static_cast<std::size_t>(rank), 0);
        src[0] = res.counts[k];
        start[0] = offsets[k];
        io::H5Id sspace(H5Screate_simple(rank, src.data(), nullptr));
        H5Sselect_hyperslab(vspace.get(), H5S_SELECT_SET, start.data(), nullptr, src.data(), nullptr);
        if (H5Pset_virtual(dcpl.get(), vspace.get(), shard_files[k].c_str(), name, sspace.get()) < 0)
          f.throw_error(name, "cannot map shard " + shard_files[k]);
      }
      H5Sselect_all(vspace.get());
      const hid_t id = H5Dcreate2(f.id(), name, type, vspace.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT);
      if (id < 0) f.throw_error(name, "cannot create virtual dataset");
      io::H5Id keep(id);
    };
    const hsize_t image_dims[4] = {0, s, s, 3};
    const hsize_t label_dims[1] = {0};
    make_vds("images", H5T_STD_U8LE, 4, image_dims);
    make_vds("labels", H5T_STD_I32LE, 1, label_dims);

    f.write_strings("paths", paths);
    f.write_strings("class_ids", plan.classes.ids);
    if (!plan.classes.names.empty()) f.write_strings("class_names", plan.classes.names);
    f.write_dataset<std::uint64_t>("class_counts", res.class_counts, {res.class_counts.size()});
    f.write_strings("shard_files", shard_files);
    f.write_dataset<std::uint64_t>("shard_offsets", offsets, {offsets.size()});
    f.write_dataset<std::uint32_t>("shard_checksums", res.checksums, {num_shards});
  });
}

std::string skipped_report(const SplitResults& res, const Plan::Split& split) {
  std::string text;
  for (const auto& shard : res.skipped)
    for (const auto& k : shard) text += k.path + "\t" + k.reason + "\n";
  for (const auto& path : split.unlabelled) text += path + "\tno label in the label file\n";
  return text;
}

// ---- gathering -----------------------------------------------------------------------------

std::string serialise_skipped(const std::map<std::size_t, ShardResult>& mine) {
  std::string s;
  for (const auto& [shard, r] : mine)
    for (const auto& k : r.skipped) s += fmt::format("{}\t{}\t{}\n", shard, k.path, k.reason);
  return s;
}

/// CPUs this process may run on (its affinity mask; mpirun binds ranks to cores by default).
int cpus_allowed() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) return 0;
  return CPU_COUNT(&set);
}

int decode_threads(const dist::Communicator& comm, int requested) {
  const int hardware = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int allowed = cpus_allowed() > 0 ? cpus_allowed() : hardware;
  int threads = requested;
  if (threads == 0 && std::getenv("OMP_NUM_THREADS")) threads = std::max(1, omp_get_max_threads());
  if (threads == 0) {
    if (allowed < hardware) {
      threads = allowed;  // bound by the launcher: use what we were given
    } else {
      // Unbound: share the node's cores between the ranks on it.
      MPI_Comm local = MPI_COMM_NULL;
      int local_size = 1;
      if (MPI_Comm_split_type(comm.get(), MPI_COMM_TYPE_SHARED, comm.rank(), MPI_INFO_NULL,
                              &local) == MPI_SUCCESS &&
          local != MPI_COMM_NULL) {
        MPI_Comm_size(local, &local_size);
        MPI_Comm_free(&local);
      }
      threads = std::max(1, hardware / std::max(1, local_size));
    }
  }
  if (threads > allowed)
    log().warn("{} decode threads but this rank may only run on {} CPU(s): its threads will share "
               "them (start with 'mpirun --bind-to none' or '--map-by slot:PE={}')",
               threads, allowed, threads);
  return threads;
}

}  // namespace

std::vector<std::string> parse_split_list(const std::string& splits) {
  std::vector<std::string> names;
  std::stringstream in(splits);
  std::string name;
  while (std::getline(in, name, ',')) {
    if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..")
      throw OptionError("splits", splits, "expected comma-separated split folder names (e.g. train,val)");
    if (std::find(names.begin(), names.end(), name) != names.end())
      throw OptionError("splits", splits, "split '" + name + "' is listed twice");
    names.push_back(name);
  }
  if (names.empty()) throw OptionError("splits", splits, "names no split");
  return names;
}

void validate(const ShardParams& p) {
  require_option(!p.root.empty(), "root", p.root, "is required (the folder holding train/ and val/)");
  require_option(!p.out.empty(), "out", p.out, "is required (the output folder)");
  require_option(p.size >= 1 && p.size <= 4096, "size", std::to_string(p.size), "must be in 1..4096");
  require_option(p.shard_size >= 1, "shard-size", std::to_string(p.shard_size), "must be at least 1");
  const std::uint64_t shard_bytes = std::uint64_t(p.shard_size) * std::uint64_t(p.size) * std::uint64_t(p.size) * 3;
  require_option(shard_bytes <= (std::uint64_t{16} << 30), "shard-size", std::to_string(p.shard_size),
                 "a shard would need more than 16 GiB of memory at this --size");
  require_option(p.threads >= 0, "threads", std::to_string(p.threads), "must be 0 (automatic) or more");
  require_option(p.compression >= 0 && p.compression <= 9, "compression", std::to_string(p.compression),
                 "must be a gzip level 0..9 (0 = none)");
  parse_split_list(p.splits);
}

std::vector<SplitSummary> write_shards(const dist::Communicator& comm, const ShardParams& p,
                                       const std::string& config_ini) {
  validate(p);
  const std::vector<std::string> split_names = parse_split_list(p.splits);

  // Plan on rank 0 (one scan of the tree), then broadcast; a bad input is reported once.
  std::string text, problem;
  std::vector<std::vector<std::string>> unlabelled;  // rank 0 only (not broadcast)
  if (comm.is_root()) {
    try {
      Plan local = make_plan(p, split_names);
      for (auto& s : local.splits) unlabelled.push_back(std::move(s.unlabelled));
      text = serialise(local);
    } catch (const Error& e) {
      problem = e.what();
    }
  }
  problem = comm.bcast(problem);
  if (!problem.empty()) throw ShardSetupError(problem);
  Plan plan = deserialise(comm.bcast(text));
  text.clear();
  for (std::size_t s = 0; s < unlabelled.size(); ++s) plan.splits[s].unlabelled = std::move(unlabelled[s]);

  const int threads = decode_threads(comm, p.threads);
  log().info("kmim_shard: {} classes, {} split(s), {} rank(s) x {} decode thread(s), {}x{} images, "
             "{} per shard",
             plan.classes.ids.size(), plan.splits.size(), comm.size(), threads, p.size, p.size,
             p.shard_size);
  std::vector<SplitSummary> summaries;

  for (const auto& split : plan.splits) {
    const auto start = std::chrono::steady_clock::now();
    const std::size_t n = split.candidates.size();
    const std::size_t shard_size = static_cast<std::size_t>(p.shard_size);
    const std::size_t num_shards = (n + shard_size - 1) / shard_size;
    const std::string digest = content_digest(p, plan, split.name);
    std::vector<ShardJob> jobs(num_shards);
    for (std::size_t s = 0; s < num_shards; ++s) {
      ShardJob& j = jobs[s];
      j.split = split.name;
      j.index = s;
      j.count = num_shards;
      j.first = s * shard_size;
      j.last = std::min(n, j.first + shard_size);
      j.file = fs::path(p.out) / split.name / sf::shard_file_name(split.name, s, num_shards);
      j.content_digest = digest;
      j.candidates_digest = candidates_digest(split.candidates, j.first, j.last);
    }
    log().info("{}: {} candidate images ({}), {} shards", split.name, n, split.layout, num_shards);

    // Rounds: in round r rank k handles shard r*size + k; the allreduce after each round gives
    // rank 0 the global count for progress (images/s over all ranks, ETA).
    Progress progress(fmt::format("shard {}", split.name), n, "images");
    ShardWorker worker(p, plan, threads, config_ini);
    const std::size_t ranks = static_cast<std::size_t>(comm.size());
    const std::size_t rounds = (num_shards + ranks - 1) / ranks;
    std::uint64_t done = 0;
    for (std::size_t r = 0; r < rounds; ++r) {
      const std::size_t s = r * ranks + static_cast<std::size_t>(comm.rank());
      std::uint64_t handled = 0;
      if (s < num_shards) {
        worker.run(jobs[s], split.candidates);
        handled = jobs[s].last - jobs[s].first;
      }
      done += comm.allreduce(handled);
      progress.update(done);
    }
    const std::map<std::size_t, ShardResult> mine = worker.finish();
    progress.finish();

    // Gather per-shard results: counts and checksums (each shard has one owner, so a sum
    // reduction assembles the tables), class counts, and the skipped lists.
    SplitResults res;
    res.counts.assign(num_shards, 0);
    res.checksums.assign(num_shards, 0);
    res.class_counts.assign(plan.classes.ids.size(), 0);
    res.skipped.resize(num_shards);
    std::vector<std::uint64_t> reused(num_shards, 0);
    for (const auto& [s, r] : mine) {
      res.counts[s] = r.images;
      res.checksums[s] = r.checksum;
      reused[s] = r.reused ? 1 : 0;
      for (std::size_t c = 0; c < r.class_counts.size(); ++c) res.class_counts[c] += r.class_counts[c];
    }
    comm.allreduce(std::span<std::uint64_t>(res.counts));
    comm.allreduce(std::span<std::uint32_t>(res.checksums));
    comm.allreduce(std::span<std::uint64_t>(res.class_counts));
    comm.allreduce(std::span<std::uint64_t>(reused));
    const std::string my_skipped = serialise_skipped(mine);
    const std::vector<char> all_skipped =
        comm.allgatherv(std::span<const char>(my_skipped.data(), my_skipped.size()));
    {
      std::istringstream in(std::string(all_skipped.begin(), all_skipped.end()));
      std::string line;
      while (std::getline(in, line)) {
        const auto t1 = line.find('\t'), t2 = line.find('\t', t1 + 1);
        res.skipped[std::stoull(line.substr(0, t1))].push_back(
            {line.substr(t1 + 1, t2 - t1 - 1), line.substr(t2 + 1)});
      }
    }
    for (const auto u : reused) res.reused += u;

    SplitSummary sum;
    sum.split = split.name;
    sum.candidates = n;
    for (const auto c : res.counts) sum.images += c;
    for (const auto& k : res.skipped) sum.skipped += k.size();
    sum.shards = num_shards;
    sum.shards_reused = res.reused;
    sum.fingerprint = sf::manifest_fingerprint(digest, p.size, plan.classes.ids, res.counts, res.checksums);

    std::string failure;
    if (comm.is_root()) {
      sum.skipped += split.unlabelled.size();
      try {
        const fs::path out(p.out);
        const fs::path report = out / (split.name + "_skipped.tsv");
        io::write_text_file_atomic(report, skipped_report(res, split));
        if (p.strict && !split.unlabelled.empty())
          throw FileError(fs::path(p.root) / split.unlabelled.front(), "no label in the label file (--strict)");
        if (sum.images == 0)
          throw FileError(fs::path(p.root) / split.name,
                          fmt::format("no image of split '{}' could be read (see {})", split.name,
                                      report.string()));
        write_manifest(out / (split.name + ".h5"), p, plan, split, jobs, res, digest,
                       sum.fingerprint, config_ini);
      } catch (const Error& e) {
        failure = e.what();
      }
    }
    failure = comm.bcast(failure);
    if (!failure.empty()) throw ShardSetupError(failure);
    sum.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    summaries.push_back(sum);
  }
  return summaries;
}

}  // namespace kmim::data
