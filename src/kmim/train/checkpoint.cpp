#include "kmim/train/checkpoint.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <regex>
#include <sstream>
#include <utility>

#include "kmim/core/error.hpp"
#include "kmim/io/atomic_output.hpp"
#include "kmim/io/hdf5.hpp"
#include "kmim/io/shard_dataset.hpp"
#include "kmim/tokenize/target_tokenizer.hpp"  // float_digest

namespace kmim::train {
namespace fs = std::filesystem;
namespace {

std::vector<hsize_t> dims_of(const model::TensorInfo& t) {
  std::vector<hsize_t> d;
  for (const std::int64_t s : t.shape) d.push_back(static_cast<hsize_t>(s));
  return d;
}

std::uint32_t state_crc(std::span<const float> params, std::span<const float> m,
                        std::span<const float> v) {
  io::shard_format::Checksum crc;
  for (const std::span<const float> part : {params, m, v}) {
    crc.add(std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(part.data()),
                                          part.size_bytes()));
  }
  return crc.value();
}

/// Index of the first non-finite value, or -1.
std::ptrdiff_t first_non_finite(std::span<const float> v) {
  for (std::size_t i = 0; i < v.size(); ++i)
    if (!std::isfinite(v[i])) return static_cast<std::ptrdiff_t>(i);
  return -1;
}

/// The tensor holding element `i` of the flat layout.
const model::TensorInfo& tensor_at(const model::ParameterLayout& layout, std::size_t i) {
  for (const auto& t : layout.tensors)
    if (i >= t.offset && i < t.offset + t.numel) return t;
  return layout.tensors.back();
}

void write_model_config(const io::H5Object& g, const model::ModelConfig& c) {
  g.set_attribute("name", c.name);
  g.set_attribute<std::int32_t>("img_size", c.img_size);
  g.set_attribute<std::int32_t>("patch_size", c.patch_size);
  g.set_attribute<std::int32_t>("channels", c.channels);
  g.set_attribute<std::int32_t>("embed_dim", c.embed_dim);
  g.set_attribute<std::int32_t>("depth", c.depth);
  g.set_attribute<std::int32_t>("num_heads", c.num_heads);
  g.set_attribute<std::int32_t>("decoder_embed_dim", c.decoder_embed_dim);
  g.set_attribute<std::int32_t>("decoder_depth", c.decoder_depth);
  g.set_attribute<std::int32_t>("decoder_num_heads", c.decoder_num_heads);
  g.set_attribute<std::int32_t>("mlp_ratio", c.mlp_ratio);
  g.set_attribute<std::int32_t>("out_dim", c.out_dim);
  g.set_attribute("loss", std::string(model::loss_kind_name(c.loss)));
  g.set_attribute<std::int32_t>("norm_pix_loss", c.norm_pix_loss ? 1 : 0);
  g.set_attribute<double>("mask_ratio", c.mask_ratio);
}

model::ModelConfig read_model_config(const io::H5Object& g) {
  model::ModelConfig c;
  c.name = g.string_attribute("name");
  c.img_size = g.attribute<std::int32_t>("img_size");
  c.patch_size = g.attribute<std::int32_t>("patch_size");
  c.channels = g.attribute<std::int32_t>("channels");
  c.embed_dim = g.attribute<std::int32_t>("embed_dim");
  c.depth = g.attribute<std::int32_t>("depth");
  c.num_heads = g.attribute<std::int32_t>("num_heads");
  c.decoder_embed_dim = g.attribute<std::int32_t>("decoder_embed_dim");
  c.decoder_depth = g.attribute<std::int32_t>("decoder_depth");
  c.decoder_num_heads = g.attribute<std::int32_t>("decoder_num_heads");
  c.mlp_ratio = g.attribute<std::int32_t>("mlp_ratio");
  c.out_dim = g.attribute<std::int32_t>("out_dim");
  try {
    c.loss = model::loss_kind_from_name(g.string_attribute("loss"));
  } catch (const std::invalid_argument& e) {
    g.throw_error("loss", e.what());
  }
  c.norm_pix_loss = g.attribute<std::int32_t>("norm_pix_loss") != 0;
  c.mask_ratio = g.attribute<double>("mask_ratio");
  try {
    c.validate();
  } catch (const std::invalid_argument& e) {
    throw FileError(g.file(), std::string("stored model config is invalid: ") + e.what());
  }
  return c;
}

void write_tensors(const io::H5Object& g, const model::ParameterLayout& layout,
                   std::span<const float> values) {
  for (const auto& t : layout.tensors) {
    g.write_dataset<float>(t.name, values.subspan(t.offset, t.numel), dims_of(t));
  }
}

void read_tensors(const io::H5Object& g, const model::ParameterLayout& layout,
                  std::span<float> values) {
  for (const auto& t : layout.tensors) {
    const io::H5Dataset d = g.dataset(t.name);
    if (d.dims() != dims_of(t) || !d.holds<float>()) {
      std::vector<std::string> want;
      for (auto s : t.shape) want.push_back(std::to_string(s));
      throw FileError(g.file(), fmt::format("{}/{}: expected float32 [{}]", g.path(), t.name,
                                            fmt::join(want, ", ")));
    }
    const std::vector<float> v = d.read<float>();
    std::copy(v.begin(), v.end(), values.begin() + static_cast<std::ptrdiff_t>(t.offset));
  }
}

void check_kind(const io::H5Object& f) {
  require_file(f.has_attribute("kind") && f.string_attribute("kind") == kCheckpointKind, f.file(),
               fmt::format("not a kmim pretraining checkpoint (attribute kind is not '{}')",
                           kCheckpointKind));
  const auto version = f.attribute<std::int32_t>("format_version");
  require_file(version == kCheckpointFormatVersion, f.file(),
               fmt::format("checkpoint format version {} is not supported (this kmim reads {})",
                           version, kCheckpointFormatVersion));
}

Checkpoint read_locked(const fs::path& file, bool with_optimizer) {
  require_file(fs::exists(file), file, "does not exist");
  require_file(io::is_hdf5_file(file), file, "is not a readable HDF5 file (truncated or damaged?)");
  const io::H5Object f = io::open_file(file, io::FileMode::read);
  check_kind(f);
  const io::H5Object mg = f.group("model");
  Checkpoint ck(read_model_config(mg));
  const model::ParameterLayout& layout = ck.params.layout();
  read_tensors(mg, layout, ck.params.values());
  const auto stored_crc = f.attribute<std::uint32_t>("checksum_crc32");
  if (with_optimizer) {
    const io::H5Object og = f.group("optimizer");
    ck.exp_avg.assign(layout.total, 0.0f);
    ck.exp_avg_sq.assign(layout.total, 0.0f);
    read_tensors(og.group("exp_avg"), layout, ck.exp_avg);
    read_tensors(og.group("exp_avg_sq"), layout, ck.exp_avg_sq);
    ck.adam_step = og.attribute<std::int64_t>("step");
    ck.adam.beta1 = og.attribute<double>("beta1");
    ck.adam.beta2 = og.attribute<double>("beta2");
    ck.adam.eps = og.attribute<double>("eps");
    ck.adam.weight_decay = og.attribute<double>("weight_decay");
    const std::uint32_t crc = state_crc(ck.params.values(), ck.exp_avg, ck.exp_avg_sq);
    require_file(crc == stored_crc, file,
                 fmt::format("checksum mismatch (stored {:08x}, data {:08x}): the file is damaged",
                             stored_crc, crc));
    const io::H5Object tg = f.group("training");
    TrainingProgress& p = ck.progress;
    p.step = tg.attribute<std::int64_t>("step");
    p.epoch = tg.attribute<std::int64_t>("epoch");
    p.step_in_epoch = tg.attribute<std::int64_t>("step_in_epoch");
    p.steps_per_epoch = tg.attribute<std::int64_t>("steps_per_epoch");
    p.images_seen = tg.attribute<std::int64_t>("images_seen");
    p.epoch_loss_sum = tg.attribute<double>("epoch_loss_sum");
    p.epoch_accuracy_sum = tg.attribute<double>("epoch_accuracy_sum");
    p.epoch_steps = tg.attribute<std::int64_t>("epoch_steps");
    p.epoch_seconds = tg.attribute<double>("epoch_seconds");
    p.elapsed_seconds = tg.attribute<double>("elapsed_seconds");
    p.last_lr = tg.attribute<double>("last_lr");
    ck.run_identity = tg.string_attribute("run_identity");
    ck.tokenizer_kind = f.string_attribute("tokenizer_kind");
    ck.tokenizer_description = f.string_attribute("tokenizer");
    ck.manifest = f.string_attribute("manifest");
    ck.manifest_fingerprint = f.string_attribute("manifest_fingerprint");
  } else {
    // The parameters alone: their own CRC (stored beside the full-state one).
    const auto stored_param_crc = f.attribute<std::uint32_t>("parameters_crc32");
    const std::uint32_t crc = state_crc(ck.params.values(), {}, {});
    require_file(crc == stored_param_crc, file,
                 fmt::format("parameter checksum mismatch (stored {:08x}, data {:08x}): the file "
                             "is damaged",
                             stored_param_crc, crc));
  }
  const std::ptrdiff_t bad = first_non_finite(ck.params.values());
  require_file(bad < 0, file,
               bad < 0 ? std::string()
                       : fmt::format("parameter {} holds a non-finite value",
                                     tensor_at(layout, static_cast<std::size_t>(bad)).name));
  return ck;
}

}  // namespace

fs::path checkpoint_path(const fs::path& dir, std::int64_t step) {
  return dir / fmt::format("checkpoint-{:08d}.h5", step);
}

std::vector<CheckpointFile> list_checkpoints(const fs::path& dir) {
  std::vector<CheckpointFile> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  static const std::regex pattern(R"(checkpoint-(\d+)\.h5)");
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    std::smatch m;
    if (entry.is_regular_file(ec) && std::regex_match(name, m, pattern)) {
      out.push_back({entry.path(), std::stoll(m[1].str())});
    }
  }
  std::sort(out.begin(), out.end(),
            [](const CheckpointFile& a, const CheckpointFile& b) { return a.step < b.step; });
  return out;
}

void write_checkpoint(const fs::path& file, const Checkpoint& ck, const std::string& program,
                      const std::string& config_ini) {
  const model::ParameterLayout& layout = ck.params.layout();
  require_file(ck.exp_avg.size() == layout.total && ck.exp_avg_sq.size() == layout.total, file,
               "optimizer moments do not match the parameter layout");
  // A checkpoint must never hold a diverged model: a resume from it could not recover.
  for (const auto& [what, values] :
       {std::pair<const char*, std::span<const float>>{"parameter", ck.params.values()},
        {"AdamW first moment of", ck.exp_avg},
        {"AdamW second moment of", ck.exp_avg_sq}}) {
    const std::ptrdiff_t bad = first_non_finite(values);
    if (bad >= 0) {
      throw FileError(file, fmt::format("not written: {} {} holds a non-finite value", what,
                                        tensor_at(layout, static_cast<std::size_t>(bad)).name));
    }
  }
  std::lock_guard<std::mutex> lock(io::hdf5_mutex());
  io::AtomicOutput out(file);
  {
    const io::H5Object f = io::create_file(out.temp_path());
    f.set_attribute("kind", kCheckpointKind);
    f.set_attribute<std::int32_t>("format_version", kCheckpointFormatVersion);
    f.set_provenance(program, config_ini);
    f.set_attribute<std::uint32_t>("checksum_crc32",
                                   state_crc(ck.params.values(), ck.exp_avg, ck.exp_avg_sq));
    f.set_attribute<std::uint32_t>("parameters_crc32", state_crc(ck.params.values(), {}, {}));
    f.set_attribute("tokenizer_kind", ck.tokenizer_kind);
    f.set_attribute("tokenizer", ck.tokenizer_description);
    f.set_attribute("manifest", ck.manifest);
    f.set_attribute("manifest_fingerprint", ck.manifest_fingerprint);

    const io::H5Object mg = f.create_group("model");
    write_model_config(mg, ck.params.config());
    write_tensors(mg, layout, ck.params.values());
    std::vector<std::string> names;
    for (const auto& t : layout.tensors) names.push_back(t.name);
    f.write_strings("parameter_names", names);
    std::vector<std::uint8_t> no_decay;
    for (const auto& t : layout.tensors) no_decay.push_back(t.no_weight_decay ? 1 : 0);
    f.write_dataset<std::uint8_t>("parameter_no_weight_decay", no_decay, {no_decay.size()});

    const io::H5Object og = f.create_group("optimizer");
    og.set_attribute("type", "AdamW");
    og.set_attribute<std::int64_t>("step", ck.adam_step);
    og.set_attribute<double>("beta1", ck.adam.beta1);
    og.set_attribute<double>("beta2", ck.adam.beta2);
    og.set_attribute<double>("eps", ck.adam.eps);
    og.set_attribute<double>("weight_decay", ck.adam.weight_decay);
    write_tensors(og.create_group("exp_avg"), layout, ck.exp_avg);
    write_tensors(og.create_group("exp_avg_sq"), layout, ck.exp_avg_sq);

    const io::H5Object tg = f.create_group("training");
    const TrainingProgress& p = ck.progress;
    tg.set_attribute<std::int64_t>("step", p.step);
    tg.set_attribute<std::int64_t>("epoch", p.epoch);
    tg.set_attribute<std::int64_t>("step_in_epoch", p.step_in_epoch);
    tg.set_attribute<std::int64_t>("steps_per_epoch", p.steps_per_epoch);
    tg.set_attribute<std::int64_t>("images_seen", p.images_seen);
    tg.set_attribute<double>("epoch_loss_sum", p.epoch_loss_sum);
    tg.set_attribute<double>("epoch_accuracy_sum", p.epoch_accuracy_sum);
    tg.set_attribute<std::int64_t>("epoch_steps", p.epoch_steps);
    tg.set_attribute<double>("epoch_seconds", p.epoch_seconds);
    tg.set_attribute<double>("elapsed_seconds", p.elapsed_seconds);
    tg.set_attribute<double>("last_lr", p.last_lr);
    tg.set_attribute("run_identity", ck.run_identity);
  }
  out.commit();
}

Checkpoint read_checkpoint(const fs::path& file) {
  std::lock_guard<std::mutex> lock(io::hdf5_mutex());
  return read_locked(file, true);
}

model::ModelConfig read_checkpoint_model_config(const fs::path& file) {
  std::lock_guard<std::mutex> lock(io::hdf5_mutex());
  require_file(io::is_hdf5_file(file), file, "is not a readable HDF5 file (truncated or damaged?)");
  const io::H5Object f = io::open_file(file, io::FileMode::read);
  check_kind(f);
  return read_model_config(f.group("model"));
}

model::Parameters load_model_parameters(const fs::path& file) {
  std::lock_guard<std::mutex> lock(io::hdf5_mutex());
  return std::move(read_locked(file, false).params);
}

std::optional<CheckpointFile> newest_valid_checkpoint(const fs::path& dir,
                                                      std::vector<std::string>& skipped) {
  std::vector<CheckpointFile> files = list_checkpoints(dir);
  for (auto it = files.rbegin(); it != files.rend(); ++it) {
    try {
      (void)read_checkpoint(it->path);
      return *it;
    } catch (const Error& e) {
      skipped.push_back(e.what());
    }
  }
  return std::nullopt;
}

std::vector<fs::path> prune_checkpoints(const fs::path& dir, int keep) {
  std::vector<fs::path> removed;
  if (keep <= 0) return removed;
  const std::vector<CheckpointFile> files = list_checkpoints(dir);
  if (files.size() <= static_cast<std::size_t>(keep)) return removed;
  for (std::size_t i = 0; i + static_cast<std::size_t>(keep) < files.size(); ++i) {
    std::error_code ec;
    if (fs::remove(files[i].path, ec)) removed.push_back(files[i].path);
  }
  return removed;
}

std::string identity_difference(const std::string& checkpoint_identity,
                                const std::string& run_identity) {
  auto parse = [](const std::string& text) {
    std::vector<std::pair<std::string, std::string>> entries;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
      const auto eq = line.find(" = ");
      if (eq == std::string::npos) continue;
      entries.emplace_back(line.substr(0, eq), line.substr(eq + 3));
    }
    return entries;
  };
  const auto a = parse(checkpoint_identity);
  const auto b = parse(run_identity);
  std::map<std::string, std::string> am(a.begin(), a.end());
  std::map<std::string, std::string> bm(b.begin(), b.end());
  for (const auto& [key, value] : b) {
    const auto it = am.find(key);
    const std::string have = it == am.end() ? "(not set)" : it->second;
    if (have != value)
      return fmt::format("{}: checkpoint has '{}', this run '{}'", key, have, value);
  }
  for (const auto& [key, value] : a) {
    if (bm.find(key) == bm.end())
      return fmt::format("{}: checkpoint has '{}', this run '(not set)'", key, value);
  }
  return {};
}

std::vector<float> read_position_embedding(const fs::path& file, const model::ModelConfig& c) {
  std::lock_guard<std::mutex> lock(io::hdf5_mutex());
  const io::H5Object root = io::open_file(file, io::FileMode::read);
  if (!root.has("model/pos_embed")) return {};
  // A learned table (converted checkpoints): [1, 1 + L, D] as PyTorch stores it.
  const io::H5Dataset d = root.group("model").dataset("pos_embed");
  const std::vector<hsize_t> want = {1, static_cast<hsize_t>(c.num_patches() + 1),
                                     static_cast<hsize_t>(c.embed_dim)};
  if (d.dims() != want || !d.holds<float>())
    throw FileError(file, fmt::format("/model/pos_embed must be float32 [1, {}, {}] for the stored "
                                      "model config (img_size {}, patch_size {}, embed_dim {})",
                                      want[1], want[2], c.img_size, c.patch_size, c.embed_dim));
  std::vector<float> table = d.read<float>();
  for (std::size_t i = 0; i < table.size(); ++i)
    if (!std::isfinite(table[i]))
      throw FileError(file, fmt::format("/model/pos_embed[{}] is not finite", i));
  if (d.has_attribute("crc32")) {
    const std::string stored = fmt::format("{:08x}", d.attribute<std::uint32_t>("crc32"));
    const std::string digest = tokenize::float_digest(table);
    if (stored != digest)
      throw FileError(file, fmt::format("/model/pos_embed checksum mismatch (stored {}, data {}): "
                                        "the file is damaged", stored, digest));
  }
  return table;
}

}  // namespace kmim::train
