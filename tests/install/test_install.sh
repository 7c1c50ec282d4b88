#!/usr/bin/env bash
# cmake --install puts programs, job scripts and docs in place, and a downstream CMake project
# finds the library with find_package(kmim).
set -u
tmp="$KMIM_TEST_TMP"; rm -rf "$tmp"; mkdir -p "$tmp"
fail() { echo "FAIL: $*"; exit 1; }
cmake --install "$KMIM_BUILD_DIR" --prefix "$tmp/prefix" >"$tmp/install.log" 2>&1 || { cat "$tmp/install.log"; fail "cmake --install"; }
[ -x "$tmp/prefix/bin/kmim_idx2folder" ] || fail "programs not installed"
[ -f "$tmp/prefix/share/doc/kmim/formats.md" ] || fail "docs not installed"
[ -f "$tmp/prefix/lib/cmake/kmim/kmimConfig.cmake" ] || fail "package config not installed"
"$tmp/prefix/bin/kmim_idx2folder" --version | grep -q "(kmim)" || fail "installed program does not run"
cmake -S "$KMIM_SOURCE_DIR/tests/install/consumer" -B "$tmp/consumer" -DCMAKE_PREFIX_PATH="$tmp/prefix" \
  >"$tmp/consumer.log" 2>&1 && cmake --build "$tmp/consumer" >>"$tmp/consumer.log" 2>&1 \
  || { tail -30 "$tmp/consumer.log"; fail "find_package(kmim) consumer did not build"; }
out=$("$tmp/consumer/consumer") || fail "consumer did not run"
[ "$out" = "consumer rank 0 of 1, philox word 3878945999" ] || fail "consumer output: $out"
echo "PASS: install + find_package(kmim)"
