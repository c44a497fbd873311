"""Self-supervised pretraining stage: the cnn_rnn frame encoder from unlabelled frames, per outer fold.

Submodule ``contrastive``: the NT-Xent loss, the pair sampler and ``pretrain_encoder``.
Nothing is imported here, so importing the package does not import torch.
"""
