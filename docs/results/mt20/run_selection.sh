#!/usr/bin/env bash
# Issue 20: IQL's setting chosen on MT10 only (docs/RESULTS.md, "Choosing IQL's Meta-World setting on MT10").
# Each arm is one benchmark sweep over the MT10 tasks (row: IQL on the learned reward, oracle
# labels), seeds in SEEDS (default 0). The jobs' result.json files are kept in
# docs/results/mt20/mt10_<arm>/ as each job finishes (commit them), and copied back before a sweep, so a new machine
# resumes where the last one stopped. Usage: ARMS="kitchen nodecay" SEEDS="0 1" JOBS=2 run_selection.sh
# Never edit this file while it runs (bash reads it as it goes).
cd /work/main
. .venv/bin/activate
export MUJOCO_GL=osmesa HYDRA_FULL_ERROR=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
KEEP=docs/results/mt20
declare -A SETTING=(
  [kitchen]="{preset: kitchen}"
  [nodecay]="{preset: kitchen, actor_cosine_decay: false}"
  [b3_nodecay]="{preset: null, expectile: 0.7, temperature: 3.0, actor_cosine_decay: false}"
  [b10_nodecay]="{preset: null, expectile: 0.7, temperature: 10.0, actor_cosine_decay: false}"
  [u20k]="{preset: kitchen, actor_cosine_decay: false}"
  [b3_u20k]="{preset: null, expectile: 0.7, temperature: 3.0, actor_cosine_decay: false}"
  [b0_u20k]="{preset: null, expectile: 0.7, temperature: 0.0, actor_cosine_decay: false}"
)
# u20k, b3_u20k: the update budget, 4x the CPU preset's (the second round of selection, 2026-12-01)
# b0_u20k: not a candidate but a check (2026-12-02): beta 0 makes IQL's actor plain behaviour cloning
# with IQL's Gaussian NLL loss, so u20k - b0_u20k is what the advantage weights add over that loss.
declare -A STEPS=([kitchen]=5000 [nodecay]=5000 [b3_nodecay]=5000 [b10_nodecay]=5000 [u20k]=20000 [b3_u20k]=20000 [b0_u20k]=20000)
ALGOS=${ALGOS:-iql}
keep() {  # copy every finished job's result.json of arm $1 into the repository
  for result in outputs/mw20/mt10_$1/*/result.json; do
    [ -f "$result" ] || continue
    job=$(basename "$(dirname "$result")")
    [ -f "$KEEP/mt10_$1/$job/result.json" ] || { mkdir -p "$KEEP/mt10_$1/$job" && cp "$result" "$KEEP/mt10_$1/$job/"; }
  done
}
for arm in ${ARMS:-kitchen nodecay b3_nodecay b10_nodecay}; do
  for seed in ${SEEDS:-0}; do
    sweep=outputs/mw20/mt10_$arm
    mkdir -p "$sweep" "$KEEP/mt10_$arm"
    cp -rn "$KEEP/mt10_$arm/." "$sweep/" 2>/dev/null   # finished jobs of earlier machines
    algos=$(echo $ALGOS | tr ' ' ',')
    start=$(date +%s)
    python -m embodied.benchmark suite=mt10 "suite.seeds=[$seed]" "suite.algos=[$algos]" \
      "++suite.learner_overrides.iql=${SETTING[$arm]}" "++suite.learner_overrides.iql_gt=${SETTING[$arm]}" \
      trainer.steps=${STEPS[$arm]} hydra.sweep.dir=$sweep hydra.launcher.n_jobs=${JOBS:-2} > "$sweep/sweep_seed$seed.log" 2>&1 &
    pid=$!
    while kill -0 $pid 2>/dev/null; do keep "$arm"; sleep 30; done   # each job's result as soon as it lands
    wait $pid
    echo "$arm seed $seed rc=$? $(( $(date +%s) - start )) s"
    keep "$arm"
    [ -f "$sweep/results.md" ] && cp "$sweep/results.md" "$KEEP/mt10_$arm/"
  done
done
