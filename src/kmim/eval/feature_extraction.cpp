#include "kmim/eval/feature_extraction.hpp"

#include <fcntl.h>
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <mutex>
#include <optional>
#include <vector>

#include <fmt/format.h>

#include "kmim/core/error.hpp"
#include "kmim/core/log.hpp"
#include "kmim/core/progress.hpp"
#include "kmim/eval/feature_file.hpp"
#include "kmim/eval/token_class_counts.hpp"
#include "kmim/io/atomic_output.hpp"
#include "kmim/io/hdf5.hpp"
#include "kmim/io/shard_dataset.hpp"

namespace kmim::eval {

namespace fs = std::filesystem;

namespace {

constexpr const char* kWorkKind = "kmim_extract_progress";
constexpr int kFeatureTag = 7101;

/// Flushes a file or folder to disk; false when that fails.
bool fsync_path(const fs::path& p, bool directory) {
  const int fd = ::open(p.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (fd < 0) return false;
  const bool ok = ::fsync(fd) == 0;
  ::close(fd);
  return ok;
}

/// The datasets and attributes of a feature file, created empty in the work file.
struct OutputLayout {
  std::uint64_t images = 0;
  std::uint64_t rows_per_image = 1;
  std::uint64_t dim = 0;
  std::uint64_t chunks = 0;
};

void create_work_file(const fs::path& work, const OutputLayout& layout, const std::string& key,
                      const FeatureExtractionParams& p, const FrozenEncoder& encoder,
                      const io::ShardDataset& data, const std::string& program,
                      const std::string& config_ini) {
  const io::H5Object root = io::create_file(work);
  const hsize_t rows = layout.images * layout.rows_per_image;
  // ~1 MiB HDF5 chunks of whole rows (a reader of a row block touches few chunks).
  const hsize_t chunk_rows =
      std::max<hsize_t>(1, std::min<hsize_t>(rows, (hsize_t{1} << 20) / (layout.dim * 4)));
  root.create_dataset<float>("features", {rows, layout.dim}, {chunk_rows, layout.dim});
  const hsize_t index_chunk = std::max<hsize_t>(1, std::min<hsize_t>(rows, 1u << 16));
  root.create_dataset<std::int32_t>("labels", {rows}, {index_chunk});
  root.create_dataset<std::int64_t>("image_index", {rows}, {index_chunk});
  const std::vector<std::uint8_t> done(layout.chunks, 0);
  root.write_dataset<std::uint8_t>("chunk_done", done, {layout.chunks});
  root.write_strings("class_ids", data.class_ids());
  root.set_attribute("kind", kFeatureFileKind);
  root.set_attribute<std::int32_t>("num_classes", data.num_classes());
  root.set_attribute("pool", std::string(feature_pool_name(feature_pool_from_name(p.pool))));
  root.set_attribute<std::int64_t>("tokens_per_image", static_cast<std::int64_t>(layout.rows_per_image));
  root.set_attribute<std::int64_t>("images", static_cast<std::int64_t>(layout.images));
  root.set_attribute<std::int64_t>("dim", static_cast<std::int64_t>(layout.dim));
  root.set_attribute("manifest", p.manifest);
  root.set_attribute("manifest_fingerprint", data.fingerprint());
  root.set_attribute("checkpoint", p.checkpoint);
  root.set_attribute("checkpoint_fingerprint", encoder.fingerprint);
  const model::ModelConfig& c = encoder.config();
  root.set_attribute("model", c.name);
  root.set_attribute<std::int32_t>("img_size", c.img_size);
  root.set_attribute<std::int32_t>("patch_size", c.patch_size);
  root.set_attribute<std::int32_t>("learned_position_embedding",
                                   encoder.position_embedding.empty() ? 0 : 1);
  root.set_attribute("preprocessing",
                     "centre crop of the stored images to img_size (torchvision CenterCrop "
                     "offsets), x/255, ImageNet mean/std, patches in (row, col, channel) order; "
                     "encoder tokens after the final LayerNorm");
  root.set_attribute<std::int64_t>("max_per_class", static_cast<std::int64_t>(p.max_per_class));
  root.set_attribute<std::int64_t>("seed", static_cast<std::int64_t>(p.seed));
  root.set_attribute("extraction_key", key);
  root.set_attribute("work_kind", kWorkKind);
  root.set_provenance(program, config_ini);
}

}  // namespace

void FeatureExtractionParams::validate() const {
  require_option(!manifest.empty(), "manifest", manifest, "is required");
  require_option(!checkpoint.empty(), "checkpoint", checkpoint, "is required");
  require_option(!out.empty(), "out", out, "is required");
  (void)feature_pool_from_name(pool);
  require_option(chunk_images >= 1, "chunk-images", std::to_string(chunk_images),
                 "must be at least 1");
  require_option(batch_images >= 1, "batch-images", std::to_string(batch_images),
                 "must be at least 1");
}

fs::path extraction_work_file(const fs::path& out) {
  fs::path p = out;
  p += ".progress.h5";
  return p;
}

ExtractionStatus extract_features(const FeatureExtractionParams& p, const std::string& program,
                                  const std::string& config_ini, const dist::Communicator& comm,
                                  const std::function<bool()>& stop_requested) {
  p.validate();
  const FeaturePool pool = feature_pool_from_name(p.pool);
  const fs::path out = p.out;
  const fs::path work = extraction_work_file(out);
  if (comm.is_root())
    io::ensure_writable_directory(out.parent_path().empty() ? fs::path(".") : out.parent_path());

  const io::ShardDataset data(p.manifest);
  const FrozenEncoder encoder = load_frozen_encoder(p.checkpoint);
  check_encoder_fits_images(encoder, data.image_size(), p.manifest);
  const auto images = select_evaluation_images(
      data.labels(), static_cast<std::size_t>(data.num_classes()), p.max_per_class, p.seed);
  if (images.empty()) throw FileError(p.manifest, "holds no images");
  EncoderRunner runner(encoder, p.batch_images);
  OutputLayout layout;
  layout.images = images.size();
  layout.rows_per_image = runner.rows_per_image(pool);
  layout.dim = runner.dim();
  layout.chunks = (layout.images + p.chunk_images - 1) / p.chunk_images;
  // A chunk travels to rank 0 as one MPI message (int count).
  require_option(std::min<std::uint64_t>(p.chunk_images, layout.images) * layout.rows_per_image *
                         layout.dim < (std::uint64_t{1} << 31),
                 "chunk-images", std::to_string(p.chunk_images),
                 fmt::format("makes chunks of more than 2^31 floats ({} rows of {} per image); "
                             "use fewer images per chunk",
                             layout.rows_per_image, layout.dim));
  // Everything that changes the file's content: a work file made with other values is refused.
  const std::string key = fmt::format(
      "manifest_fingerprint = {}\ncheckpoint_fingerprint = {}\npool = {}\nchunk_images = {}\n"
      "batch_images = {}\nmax_per_class = {}\nseed = {}\nimages = {}\n",
      data.fingerprint(), encoder.fingerprint, feature_pool_name(pool), p.chunk_images,
      p.batch_images, p.max_per_class, p.seed, layout.images);

  // Rank 0 owns the work file (serial HDF5); the others send it their chunks.
  std::optional<io::H5Object> file;
  std::vector<std::uint8_t> done(layout.chunks, 0);
  // A failure on rank 0 is thrown there; run_program aborts the job, ending the other ranks
  // waiting in the broadcast below.
  if (comm.is_root()) {
    {
      bool resumed = false;
      if (fs::exists(work) && !p.restart) {
        std::optional<io::H5Object> previous;
        try {
          previous.emplace(io::open_file(work, io::FileMode::read_write));
        } catch (const FileError& e) {
          log().warn("extract: the work file '{}' of an earlier run cannot be read ({}); "
                     "starting over", work.string(), e.what());
        }
        if (previous) {
          const bool ours = previous->has_attribute("work_kind") &&
                            previous->string_attribute("work_kind") == kWorkKind &&
                            previous->has("chunk_done");
          if (!ours)
            throw FileError(work, "exists but is not a kmim_extract work file; remove it");
          const std::string stored = previous->string_attribute("extraction_key");
          if (stored != key) {
            std::string difference = "inputs or settings differ";
            std::size_t a = 0, b = 0;
            while (a < stored.size() && b < key.size()) {
              const std::size_t ea = stored.find('\n', a), eb = key.find('\n', b);
              const std::string la = stored.substr(a, ea - a), lb = key.substr(b, eb - b);
              if (la != lb) {
                difference = fmt::format("work file has '{}', this run has '{}'", la, lb);
                break;
              }
              a = ea + 1;
              b = eb + 1;
            }
            throw FileError(work, fmt::format("was made by an extraction with other inputs or "
                                              "settings ({}); remove it or pass --restart",
                                              difference));
          }
          done = previous->read_dataset<std::uint8_t>("chunk_done");
          if (done.size() != layout.chunks)
            throw FileError(work, "chunk_done does not match the number of chunks; remove it");
          file = std::move(previous);
          resumed = true;
        }
      }
      if (!resumed) {
        if (fs::exists(work)) fs::remove(work);
        create_work_file(work, layout, key, p, encoder, data, program, config_ini);
        file.emplace(io::open_file(work, io::FileMode::read_write));
      }
    }
  }
  comm.bcast(std::span<std::uint8_t>(done));

  std::vector<std::uint64_t> pending;
  for (std::uint64_t c = 0; c < layout.chunks; ++c)
    if (done[c] == 0) pending.push_back(c);
  auto chunk_images = [&](std::uint64_t c) {
    const std::uint64_t first = c * p.chunk_images;
    return std::span<const std::uint64_t>(images).subspan(
        first, std::min<std::uint64_t>(p.chunk_images, layout.images - first));
  };
  std::uint64_t images_done = 0;
  for (std::uint64_t c = 0; c < layout.chunks; ++c)
    if (done[c] != 0) images_done += chunk_images(c).size();
  if (images_done > 0)
    log().info("extract: continuing '{}': {} of {} chunks done ({} of {} images)", work.string(),
               layout.chunks - pending.size(), layout.chunks, images_done, layout.images);
  log().info("extract: {} images of '{}' ({}x{}) through {}, pool {} -> {} rows of {} floats, "
             "{} chunk(s) of {} images, {} rank(s)",
             layout.images, p.manifest, data.image_size(), data.image_size(),
             encoder.description(), feature_pool_name(pool), layout.images * layout.rows_per_image,
             layout.dim, layout.chunks, p.chunk_images, comm.size());

  Progress progress("extract", layout.images, "images");
  progress.update(images_done);
  const std::size_t row_floats = layout.rows_per_image * layout.dim;
  std::vector<std::uint8_t> pixels;
  std::vector<float> features, received;
  std::vector<std::int32_t> labels;
  std::vector<std::int64_t> index;
  const auto size = static_cast<std::uint64_t>(comm.size());
  std::uint64_t chunks_this_run = 0;
  ExtractionStatus status = ExtractionStatus::complete;

  // Rank 0 writes chunk c's rows from `values` (its own or received).
  auto write_chunk = [&](std::uint64_t c, const std::vector<float>& values) {
    const auto ids = chunk_images(c);
    const std::uint64_t first_row = c * p.chunk_images * layout.rows_per_image;
    const std::uint64_t rows = ids.size() * layout.rows_per_image;
    labels.resize(rows);
    index.resize(rows);
    for (std::size_t i = 0; i < ids.size(); ++i)
      for (std::uint64_t t = 0; t < layout.rows_per_image; ++t) {
        labels[i * layout.rows_per_image + t] = data.labels()[ids[i]];
        index[i * layout.rows_per_image + t] = static_cast<std::int64_t>(ids[i]);
      }
    file->dataset("features").write_rows<float>(first_row, rows,
                                                std::span<const float>(values.data(), rows * layout.dim));
    file->dataset("labels").write_rows<std::int32_t>(first_row, rows, labels);
    file->dataset("image_index").write_rows<std::int64_t>(first_row, rows, index);
  };

  for (std::size_t round = 0; round < pending.size(); round += size) {
    const std::size_t mine = round + static_cast<std::size_t>(comm.rank());
    if (mine < pending.size()) {
      const auto ids = chunk_images(pending[mine]);
      pixels.resize(ids.size() * data.image_bytes());
      data.read_indices(ids, pixels);
      features.resize(ids.size() * row_floats);
      runner.center_crop_features(pixels.data(), ids.size(), data.image_size(), pool,
                                  features.data());
    }
    const std::size_t in_round = std::min<std::size_t>(size, pending.size() - round);
    if (comm.is_root()) {
      write_chunk(pending[round], features);
      for (std::size_t r = 1; r < in_round; ++r) {
        const std::uint64_t c = pending[round + r];
        received.resize(chunk_images(c).size() * row_floats);
        dist::check_mpi(MPI_Recv(received.data(), static_cast<int>(received.size()), MPI_FLOAT,
                                 static_cast<int>(r), kFeatureTag, comm.get(), MPI_STATUS_IGNORE),
                        "MPI_Recv");
        write_chunk(c, received);
      }
      for (std::size_t r = 0; r < in_round; ++r) done[pending[round + r]] = 1;
      file->dataset("chunk_done").write<std::uint8_t>(done);
      if (H5Fflush(file->id(), H5F_SCOPE_GLOBAL) < 0)
        throw FileError(work, "cannot flush the work file");
    } else if (mine < pending.size()) {
      dist::check_mpi(MPI_Send(features.data(), static_cast<int>(features.size()), MPI_FLOAT, 0,
                               kFeatureTag, comm.get()),
                      "MPI_Send");
    }
    for (std::size_t r = 0; r < in_round; ++r) images_done += chunk_images(pending[round + r]).size();
    chunks_this_run += in_round;
    progress.update(images_done);
    if (round + in_round >= pending.size()) break;
    const bool stop = comm.any(stop_requested && stop_requested());
    if (stop) {
      status = ExtractionStatus::stopped;
      break;
    }
    if (p.stop_after_chunks > 0 && chunks_this_run >= p.stop_after_chunks) {
      status = ExtractionStatus::stopped_after_chunks;
      break;
    }
  }
  progress.finish();

  if (status == ExtractionStatus::complete) {
    if (comm.is_root()) {
      int ok = 1;
      std::string failure;
      // The finished file: without the progress record, flushed to disk, renamed into place.
      if (H5Ldelete(file->id(), "chunk_done", H5P_DEFAULT) < 0 ||
          H5Adelete(file->id(), "work_kind") < 0) {
        ok = 0;
        failure = "cannot finish the work file";
      }
      file.reset();
      std::error_code ec;
      if (ok && !fsync_path(work, false)) {
        ok = 0;
        failure = system_message("cannot flush the finished features to disk", errno);
      }
      if (ok) {
        fs::rename(work, out, ec);
        if (ec) {
          ok = 0;
          failure = "cannot move the finished features into place: " + ec.message();
        } else {
          fsync_path(out.has_parent_path() ? out.parent_path() : fs::path("."), true);
        }
      }
      if (!ok) throw FileError(out, failure);
    }
  } else {
    file.reset();
  }
  comm.barrier();
  return status;
}

}  // namespace kmim::eval
