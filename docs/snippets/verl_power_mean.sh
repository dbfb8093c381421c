#!/usr/bin/env bash
# verl imports the modules named here on `import verl`, in the driver and in every Ray worker:
# that registers the loss mode "power_mean".
export VERL_USE_EXTERNAL_MODULES=rl.integrations.verl

python -m verl.trainer.main_ppo \
    algorithm.adv_estimator=grpo \
    actor_rollout_ref.actor.policy_loss.loss_mode=power_mean \
    actor_rollout_ref.actor.policy_loss._target_=rl.integrations.verl.PowerMeanPolicyLossConfig \
    +actor_rollout_ref.actor.policy_loss.power_mean_p=-1.0 \
    actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-mean \
    actor_rollout_ref.actor.clip_ratio_low=3e-4 \
    actor_rollout_ref.actor.clip_ratio_high=4e-4 \
    "$@"    # your data, model, rollout and trainer settings
