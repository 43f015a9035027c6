# The Hydra overrides that plug rollwise into a verl 0.9.1 GRPO launch (v1 trainer): GPS chooses
# the prompts (RollwiseDataset), the replay buffer reports every finished group's rewards
# (RollwiseReplayBuffer). Sourced by the launch scripts next to this file; in your own launch
# script, source it and pass "${ROLLWISE_OVERRIDES[@]}" to verl.trainer.main_ppo.
# Change the strategy or its hyper-parameters with overrides after these, e.g.
# +trainer.v1.sampler.sampler_kwargs.strategy=mopps (docs/verl.md lists every key).
ROLLWISE_OVERRIDES=(
    data.dataloader_num_workers=0
    data.custom_cls.path=pkg://rollwise.integrations.verl
    data.custom_cls.name=RollwiseDataset
    trainer.v1.sampler.custom_sampler.path=pkg://rollwise.integrations.verl
    trainer.v1.sampler.custom_sampler.name=RollwiseReplayBuffer
    +trainer.v1.sampler.sampler_kwargs.strategy=gps
    +trainer.v1.sampler.sampler_kwargs.seed=0
    +trainer.v1.sampler.sampler_kwargs.embedder=wordllama
    +trainer.v1.sampler.sampler_kwargs.id_column=extra_info.prompt_id
    +trainer.v1.sampler.sampler_kwargs.hyper.target=0.5
    +trainer.v1.sampler.sampler_kwargs.hyper.diversity=0.1
    '+trainer.v1.sampler.sampler_kwargs.train_batch_size=${data.train_batch_size}'
    '+trainer.v1.sampler.sampler_kwargs.filter_groups=${algorithm.filter_groups}'
    '+trainer.v1.sampler.sampler_kwargs.sync_refill_failed_groups=${trainer.v1.sampler.sync_refill_failed_groups}'
)
