"""Self-supervised pretraining with Accelerate: ``accelerate launch -m pretrain --config configs/pretrain/<x>.yaml``."""
