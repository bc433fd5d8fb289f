"""Model-free baselines for the policies PDDP / PLAL learn (issue 12): the reference curve of Le
Lidec et al.'s Fig. 3, scored by the same held-out J(pi)/J* against the same simulator-call
budget.

:mod:`.sb3` trains PPO or SAC (stable-baselines3) on :mod:`learning.envs`; :mod:`.report` writes
the run's metrics.csv and convergence.png.

Nothing is imported here: importing the package never loads torch or stable-baselines3.
"""
