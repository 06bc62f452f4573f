#!/usr/bin/env bash
# Issue 20: the report at IQL's setting chosen on MT10 (docs/RESULTS.md, "Choosing IQL's Meta-World
# setting on MT10"): every row of SUITE (default mt50_minus_mt10, the 40 MT50 tasks not in MT10) as
# one benchmark sweep in outputs/mw20/NAME. Each job's result.json is kept in docs/results/mt20/NAME/
# as soon as it lands (commit them) and copied back before the sweep, so a new machine skips the
# finished jobs; an unfinished job on the same machine resumes from its checkpoint.
# Usage: SETTING="{preset: kitchen, actor_cosine_decay: false}" NAME=mt40 JOBS=2 run_report.sh
#   SUITE (mt50_minus_mt10), SEEDS ("0 1"), ALGOS ("iql iql_gt bc expert"), STEPS (5000).
# Never edit this file while it runs (bash reads it as it goes).
set -u
cd /work/main
. .venv/bin/activate
export MUJOCO_GL=osmesa HYDRA_FULL_ERROR=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
: "${SETTING:?the IQL setting chosen on MT10, e.g. SETTING='{preset: kitchen, actor_cosine_decay: false}'}"
SUITE=${SUITE:-mt50_minus_mt10}
NAME=${NAME:-mt40}
KEEP=docs/results/mt20/$NAME
sweep=outputs/mw20/$NAME
mkdir -p "$sweep" "$KEEP"
keep() {  # copy every finished job's result.json into the repository
  for result in "$sweep"/*/result.json; do
    [ -f "$result" ] || continue
    job=$(basename "$(dirname "$result")")
    [ -f "$KEEP/$job/result.json" ] || { mkdir -p "$KEEP/$job" && cp "$result" "$KEEP/$job/"; }
  done
}
cp -rn "$KEEP/." "$sweep/" 2>/dev/null   # finished jobs of earlier machines
seeds=$(echo ${SEEDS:-0 1} | tr ' ' ',')
algos=$(echo ${ALGOS:-iql iql_gt bc expert} | tr ' ' ',')
start=$(date +%s)
python -m embodied.benchmark suite=$SUITE "suite.seeds=[$seeds]" "suite.algos=[$algos]" \
  "++suite.learner_overrides.iql=$SETTING" "++suite.learner_overrides.iql_gt=$SETTING" \
  trainer.steps=${STEPS:-5000} hydra.sweep.dir=$sweep hydra.launcher.n_jobs=${JOBS:-2} > "$sweep/sweep.log" 2>&1 &
pid=$!
while kill -0 $pid 2>/dev/null; do keep; sleep 30; done
wait $pid
rc=$?
echo "$NAME rc=$rc $(( $(date +%s) - start )) s"
keep
for f in results.md results.json results.png; do [ -f "$sweep/$f" ] && cp "$sweep/$f" "$KEEP/"; done
exit $rc
