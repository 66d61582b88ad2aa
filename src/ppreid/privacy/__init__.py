"""The parts of ``model=privacy_gan`` (``ppreid.models.privacy_gan``), one job per file.

- ``reversal``: ``ReversalStep``, one step of a feature-reversal GAN (D with lazy updates and lazy R1,
  then G): used by the GAN defence and by a GAN attacker;
- ``phases``: the epoch schedule (extractor alone, reversal alone, joint) and the module modes of each
  phase, set at the phase boundaries;
- ``defences``: what the extractor is trained against in the joint phase: ``gan`` (the reversal GAN),
  ``pool`` (a pool of decoders with restarts), ``dependence`` (a within-identity dependence penalty);
- ``history``: the epoch means of every loss term and the panels of ``loss_curves.png``;
- ``saved_state``: what a checkpoint holds beside the weights (counters, phase, boundaries);
- ``guards``: what stops a run early (a NaN / inf loss, DDP ranks out of step).
"""
