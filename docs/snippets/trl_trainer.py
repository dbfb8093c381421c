from datasets import Dataset

from rl.integrations.trl import PowerMeanGRPOConfig, PowerMeanGRPOTrainer


def reward_distinct(completions, **kwargs):            # any TRL reward function
    return [len(set(c)) / 8 for c in completions]


dataset = Dataset.from_dict({"prompt": ["1+2=?", "3+4=?", "9-5=?", "2+2=?"]})
args = PowerMeanGRPOConfig(
    output_dir="hmpo-grpo",
    power_p=-1.0,                      # HMPO; 0.0 reproduces TRL's GSPO, 1.0 the arithmetic mean
    epsilon=3e-4, epsilon_high=4e-4,   # clip window of the sequence ratio
    loss_agg="seq-mean-token-mean",    # verl's aggregation names
    num_generations=4, per_device_train_batch_size=4, max_completion_length=8,
    max_steps=2, report_to="none",
)
trainer = PowerMeanGRPOTrainer(
    model="Qwen/Qwen2.5-0.5B-Instruct", reward_funcs=reward_distinct, args=args, train_dataset=dataset
)
trainer.train()                        # logs power_mean/p, power_mean/clip_frac, ... beside TRL's metrics
