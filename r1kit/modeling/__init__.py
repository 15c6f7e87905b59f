"""The model layer every stage shares (pretrain, SFT, GRPO, distillation, evaluation).

- `r1kit.modeling.loading`: dtype, local path vs hub id, LoRA directories, `load_for_training(cfg, device)`.
- `r1kit.modeling.lora`: LoRA through peft for dense and DeepSeek-V3-style MoE models, adapter save/load
  with the MoE router biases.
- `r1kit.modeling.moe`: expert-load tracking, DeepSeek-V3 aux-loss-free balancing (`ExpertBalancer`,
  knob `moe_bias_update_speed` in every recipe), the router aux loss, routing replay.
- `r1kit.modeling.fsdp`: FSDP2 applied by r1kit (`fully_shard` per decoder layer), whole weights gathered for
  rollouts, the sharded gradient norm, sharded checkpoints and the gathered state dict (GRPO uses it).
- The one atomic, adapter-aware save is `r1kit.checkpoint.save_model`.

Submodules import torch; import the one you need (`from r1kit.modeling.moe import is_moe`).
"""
