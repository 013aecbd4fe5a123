"""GPU stages: depth network, contrastive pre-training."""
