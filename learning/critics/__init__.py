"""Sobolev critics: first-order TD learning (Schramm et al.) and value-gradient SAC
(Gurumurthy et al.). The target and the loss are in :mod:`.targets`, one algorithm per module
(:mod:`.qlearning`, :mod:`.sac`), the run loop with checkpoints in :mod:`.trainer`.

Import from the modules: nothing is imported here, so that a config check never pays for torch.
"""
