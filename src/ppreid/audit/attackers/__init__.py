"""Reversal attackers of the privacy audit (``model=attack``), one kind per module:

- ``decoder``: ``L1Attacker`` (the conventional reversal) and ``GANAttacker`` (+ a feature-conditioned D);
- ``diffusion``: ``DiffusionAttacker`` (a conditional DDPM, DDIM sampling, per-image seeded noise);
- ``optim``: ``OptimAttacker`` (white-box model inversion by gradient descent on the image);
- ``images``: the one path between an extractor's normalized input and [0, 1] images at any size.
"""
