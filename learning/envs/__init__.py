"""Gymnasium environments on the project's models.

* :mod:`.ocp_env`: :class:`~.ocp_env.OCPEnv`, one OCP family of :mod:`learning.plal.systems` as
  an episodic environment whose return is minus the OC cost (the PLAL baselines).
* :mod:`.swingup`: :class:`~.swingup.SwingUpEnv`, pendulum / cartpole swing-up with a "real"
  and a "nominal" model and the Jacobians first-order critics need.
* :mod:`.toy1d`: Schramm et al.'s 1D toy and its optimum.

Import from the modules (``from learning.envs.ocp_env import OCPEnv``): nothing is imported here,
so that importing one environment never pays for the others' dependencies.
"""
