"""Roll out online drawer-open-v3 policies from their last checkpoint and print where the drawer ends.

Usage: python docs/results/online_item1/probe_drawer.py RUN_DIR ...
Per run, 3 episodes (reset seeds 1000-1002): the return, Meta-World's info averaged over the last
100 steps (success, near_object, grasp_success, grasp_reward, in_place_reward, obj_to_target in m)
and the smallest drawer-to-goal distance reached (success needs <= 0.03 m; it starts at 0.19 m).
"""
import sys

import numpy as np
from hydra import compose, initialize_config_module

from embodied.config import register_configs
from embodied.tasks import make_env, make_policy

register_configs()
with initialize_config_module(config_module="conf", version_base="1.3"):
    cfg = compose(config_name="online", overrides=["+task=metaworld", "task.env.task=drawer-open-v3"])
for run in sys.argv[1:]:
    policy, _ = make_policy(cfg.task, checkpoint=run, device="cpu")
    env = make_env(cfg.task)
    for ep in range(3):
        obs, _ = env.reset(seed=1000 + ep)
        policy.reset(seed=1000 + ep)
        infos, ret = [], 0.0
        for _ in range(500):
            obs, reward, term, trunc, info = env.step(policy.act(obs))
            ret += reward
            infos.append(info)
            if term or trunc:
                break
        keys = [k for k in ("success", "near_object", "grasp_success", "grasp_reward", "in_place_reward", "obj_to_target") if k in infos[-1]]
        print(run.split("/")[-1], ep, f"return {ret:.0f}", {k: round(float(np.mean([i[k] for i in infos[-100:]])), 3) for k in keys},
              "min obj_to_target", round(min(float(i.get("obj_to_target", np.nan)) for i in infos), 3))
    env.close()
