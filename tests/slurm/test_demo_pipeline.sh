#!/usr/bin/env bash
# jobs/demo_pipeline.sh on the local Slurm: every stage is submitted with sbatch, chained by
# afterok, and must end COMPLETED with exit 0:0; a stage whose program exists must have run and
# written a valid output, a stage whose program is missing must say so and skip (as must the
# stages needing its outputs); and no stage may start before the one it depends on has ended.
source "$(dirname "${BASH_SOURCE[0]}")/slurm_test_lib.sh"
require_cluster
fresh_tmp
run="$KMIM_TEST_TMP/run"

# slurm_local_up.sh on a running cluster: "up", nothing restarted.
state="${KMIM_SLURM_DIR:-/var/lib/kmim-slurm}"
before="$(cat "$state/slurmctld.pid" "$state/slurmd.pid" 2>/dev/null || true)"
up="$("$KMIM_SOURCE_DIR/scripts/slurm_local_up.sh" 2>&1)" || { echo "$up"; fail "slurm_local_up.sh failed on a running cluster"; }
grep -q "Slurm is up" <<<"$up" || { echo "$up"; fail "slurm_local_up.sh did not report the cluster up"; }
[ "$before" = "$(cat "$state/slurmctld.pid" "$state/slurmd.pid" 2>/dev/null || true)" ] \
  || fail "slurm_local_up.sh restarted daemons that were running"

out="$(KMIM_RUN_DIR="$run" "$KMIM_SOURCE_DIR/jobs/demo_pipeline.sh" 2>&1)" || { echo "$out"; fail "demo_pipeline.sh failed"; }
echo "$out"
declare -A id=()
while read -r stage job; do id[$stage]=$job; done < <(job_ids_of "$out")
for s in shard kmeans pretrain tcas linprobe; do [ -n "${id[$s]:-}" ] || fail "no job id printed for stage $s"; done

kmim_wait_jobs 150 "${id[shard]}" "${id[kmeans]}" "${id[pretrain]}" "${id[tcas]}" "${id[linprobe]}" \
  || { show_logs "$run/logs"; fail "not every demo job COMPLETED"; }

declare -A program=([shard]=kmim_shard [kmeans]=kmim_kmeans [pretrain]=kmim_pretrain [tcas]=kmim_tcas [linprobe]=kmim_linprobe)
declare -A upstream=([kmeans]=shard [pretrain]=kmeans [tcas]=kmeans [linprobe]=pretrain)
ran=()
for s in shard kmeans pretrain tcas linprobe; do
  log="$run/logs/kmim-$s-${id[$s]}.out"
  [ -f "$log" ] || fail "stage $s: no log $log"
  [ "$(kmim_job_field "${id[$s]}" ExitCode)" = 0:0 ] || fail "stage $s: exit code $(kmim_job_field "${id[$s]}" ExitCode)"
  if [ ! -x "$KMIM_BIN_DIR/${program[$s]}" ]; then
    grep -q "stage $s: program ${program[$s]} not built yet" "$log" || { cat "$log"; fail "stage $s: no 'not built yet' message"; }
    [ -f "$run/skipped/$s" ] || fail "stage $s: skipped without a marker for the stages downstream"
  elif [ -f "$run/skipped/$s" ]; then
    # Built, yet skipped: only allowed because a stage it needs was skipped.
    up="${upstream[$s]:-}"
    [ -n "$up" ] && [ -f "$run/skipped/$up" ] && grep -q "because stage $up was skipped" "$log" \
      || { cat "$log"; fail "stage $s: ${program[$s]} exists but the stage was skipped"; }
  else
    grep -q "stage $s: finished" "$log" || { cat "$log"; fail "stage $s: no 'finished' line"; }
    ran+=("$s")
  fi
done
echo "stages that ran: ${ran[*]:-none}; skipped: $(ls "$run/skipped" 2>/dev/null | tr '\n' ' ')"

# afterok: a stage starts no earlier than its dependency's end.
epoch() { date -d "$(kmim_job_field "$1" "$2")" +%s; }
for s in kmeans pretrain tcas linprobe; do
  up="${upstream[$s]}"
  [ "$(epoch "${id[$s]}" StartTime)" -ge "$(epoch "${id[$up]}" EndTime)" ] \
    || fail "stage $s started before stage $up ended"
done

for s in "${ran[@]}"; do
  case "$s" in
    shard)
      h5_check "$run/data/train.h5" "f.attrs['num_images'] == 200" "f.attrs['num_classes'] == 10" \
        "f['images'].shape == (200, 32, 32, 3)" "f['labels'].shape == (200,)" \
        "sorted(np.unique(f['labels'][:])) == list(range(10))"
      h5_check "$run/data/val.h5" "f.attrs['num_images'] == 50" "f['images'].shape == (50, 32, 32, 3)" ;;
    kmeans)
      h5_check "$run/codebook.h5" "f['centroids'].shape == (10, 48)" "np.isfinite(f['centroids'][:]).all()" \
        "f['cluster_sizes'][:].sum() == 200 * 64" ;;
    pretrain)
      ckpt="$(ls -t "$run/pretrain"/*.h5 2>/dev/null | sed -n 1p)"
      [ -n "$ckpt" ] || fail "stage pretrain wrote no .h5 file in $run/pretrain"
      h5dump -H "$ckpt" >/dev/null || fail "$ckpt is not a valid HDF5 file" ;;
    tcas)  # docs/eval.md: one group per tokenizer with its [K, C] token-class counts
      h5_check "$run/tcas.h5" "f.attrs['kind'] == 'kmim_tcas_report'" "f.attrs['images'] == 50" \
        "all(f[t + '/counts'][:].sum() == 50 * 64 for t in f['tokenizers'].asstr()[:])" ;;
    linprobe)
      h5dump -H "$run/linprobe.h5" >/dev/null || fail "linprobe.h5 is not a valid HDF5 file" ;;
  esac
done
echo "PASS: demo pipeline, ${#ran[@]} stages ran, every job COMPLETED"
