// Writes a kmim_shard test tree (see test_tree.hpp) for the e2e scripts:
//   make_test_tree <root> [--val-layout folders|csv|list] [--per-class N] [--no-large] [--no-special]
//                         [--photo W H]   (train images W×H with photo-like noise; benchmarks)
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "test_tree.hpp"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: make_test_tree ROOT [--val-layout L] [--per-class N] [--no-large] [--no-special]\n");
    return 2;
  }
  kmim::testing::TreeOptions o;
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--val-layout" && i + 1 < argc) o.val_layout = argv[++i];
    else if (a == "--per-class" && i + 1 < argc) o.train_per_class = std::atoi(argv[++i]);
    else if (a == "--no-large") o.large_image = false;
    else if (a == "--no-special") o.special_files = false;
    else if (a == "--photo" && i + 2 < argc) {
      o.photo_width = std::atoi(argv[++i]);
      o.photo_height = std::atoi(argv[++i]);
    }
    else {
      std::fprintf(stderr, "make_test_tree: unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  const auto facts = kmim::testing::make_test_tree(argv[1], o);
  std::printf("%zu good train images, %zu broken, %llu val images\n", facts.train_good.size(),
              facts.train_broken.size(), static_cast<unsigned long long>(facts.val_images));
  return 0;
}
