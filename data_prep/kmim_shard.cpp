// kmim_shard: an ImageNet-style folder tree → HDF5 image shards with one manifest per split
// (SPEC §1, first pipeline stage). Format and options: docs/shard.md.
//
//   mpirun -np 4 kmim_shard --root /data/imagenet --out /scratch/in100
//       --classes data/imagenet100.txt --class-names LOC_synset_mapping.txt
#include <cstdio>

#include <fmt/format.h>

#include "kmim/core/options.hpp"
#include "kmim/data/shard_writer.hpp"
#include "kmim/dist/program.hpp"

namespace {

int shard_main(kmim::dist::Communicator& comm, int argc, char** argv) {
  kmim::data::ShardParams p;
  kmim::OptionSet opts("kmim_shard",
                       "Converts an ImageNet-style folder tree (<root>/train/<class>/*.JPEG, "
                       "<root>/val/...) into HDF5 image shards plus a manifest per split.");
  opts.add("root", p.root, "dataset root holding the split folders (train/, val/)")
      .add("out", p.out, "output folder: <out>/<split>.h5 manifests, <out>/<split>/ shards")
      .add("splits", p.splits, "comma-separated split folders to convert")
      .add("classes", p.classes, "class list file (one wnid per line, e.g. data/imagenet100.txt); "
                                 "default: every class folder of <root>/train")
      .add("class-names", p.class_names,
           "class-name file in LOC_synset_mapping.txt form (\"n01440764 tench, Tinca tinca\"); "
           "default: <root>/LOC_synset_mapping.txt if present")
      .add("val-labels", p.val_labels,
           "labels of a flat val/ folder: LOC_val_solution.csv or 'filename wnid' lines "
           "(default: <root>/LOC_val_solution.csv if present)")
      .add("size", p.size, "output side: resize the short side to this (antialiased bicubic), "
                           "then centre-crop to size x size")
      .add("shard-size", p.shard_size, "images per shard (memory per rank ~ shard-size*size^2*3 B)")
      .add_flag("shuffle", p.shuffle, "store each split in a seeded random order")
      .add("seed", p.seed, "seed of --shuffle")
      .add_flag("strict", p.strict, "stop with an error at the first unreadable image "
                                    "(default: skip it and list it in <split>_skipped.tsv)")
      .add("threads", p.threads, "decode threads per rank (0: the node's cores / ranks on it, "
                                 "or OMP_NUM_THREADS)")
      .add("compression", p.compression, "gzip level 0..9 for the images (0: none, fastest reads)");
  if (!opts.parse(argc, argv)) return 0;
  opts.require("root", !p.root.empty(), "is required (the folder holding train/ and val/)");
  opts.require("out", !p.out.empty(), "is required (the output folder)");
  kmim::data::validate(p);

  const auto summaries = kmim::data::write_shards(comm, p, opts.effective_ini());
  if (comm.is_root()) {
    for (const auto& s : summaries) {
      fmt::print("{}: {} images in {} shards ({} reused), {} skipped (see {}/{}_skipped.tsv), "
                 "{:.1f} images/s, fingerprint {}\n",
                 s.split, s.images, s.shards, s.shards_reused, s.skipped, p.out, s.split,
                 s.seconds > 0 ? static_cast<double>(s.candidates) / s.seconds : 0.0,
                 s.fingerprint);
    }
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return kmim::dist::run_program("kmim_shard", argc, argv, shard_main); }
