"""Gymnasium environments on the project's models, for the model-free baselines (issue 12) and
the environments to come (issue 13).

:mod:`.ocp_env`: :class:`~.ocp_env.OCPEnv`, one OCP family of :mod:`learning.plal.systems` as an
episodic environment whose return is minus the OC cost.

Import from the modules (``from learning.envs.ocp_env import OCPEnv``): nothing is imported here,
so that importing one environment never pays for the others' dependencies.
"""
