#!/usr/bin/env bash
# Issue 16, item 1 (docs/RESULTS.md, "Online RL from feedback on Meta-World"): drawer-open-v3 and button-press-topdown-v3, SAC (true reward) / PEBBLE oracle / PEBBLE mistake,
# seeds 0-2, 100k env steps. Resumable: finished runs (their metrics.json copied into
# docs/results/online_item1/<name>/) are skipped; unfinished ones resume from their checkpoint.
# JOBS runs in parallel (default 2), one torch thread each. RUNS="drawer-open_oracle_seed1 ..." runs only
# those. Never edit this file while it runs (bash reads it as it goes).
cd /work/main
. .venv/bin/activate
export MUJOCO_GL=osmesa HYDRA_FULL_ERROR=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
KEEP=docs/results/online_item1
mkdir -p "$KEEP" outputs/item1/runs
jobs_list() {
  for seed in 0 1 2; do
    for task in drawer-open-v3 button-press-topdown-v3; do
      for row in gt oracle mistake; do echo "$task $row $seed"; done
    done
  done
}
one() {
  task=$1; row=$2; seed=$3
  name=${task%-v3}_${row}_seed${seed}
  [ -n "$RUNS" ] && [[ " $RUNS " != *" $name "* ]] && return 0
  [ -f "$KEEP/$name/metrics.json" ] && { echo "skip $name"; return 0; }
  if [ "$row" = gt ]; then extra="online.reward=gt"; else extra="online.reward=pebble labeler=$row"; fi
  start=$(date +%s)
  python -m embodied.online +task=metaworld task.env.task=$task $extra seed=$seed online.threads=1 \
    eval.videos=0 hydra.run.dir=outputs/item1/runs/$name > outputs/item1/runs/$name.log 2>&1
  rc=$?
  if [ $rc = 0 ] && [ -f outputs/item1/runs/$name/metrics.json ]; then
    mkdir -p "$KEEP/$name"
    cp outputs/item1/runs/$name/metrics.json outputs/item1/runs/$name/metrics.jsonl "$KEEP/$name/"
    [ -f outputs/item1/runs/$name/report.md ] && cp outputs/item1/runs/$name/report.md "$KEEP/$name/"
    echo "$(( $(date +%s) - start ))" > "$KEEP/$name/wall_time_s"
  fi
  echo "done $name rc=$rc $(( $(date +%s) - start )) s"
}
export -f one
export KEEP RUNS
jobs_list | xargs -P "${JOBS:-2}" -L 1 bash -c 'one $0 $1 $2'
