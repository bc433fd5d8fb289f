"""Warm-start policies by trajectory optimisation (Le Lidec et al., "Enforcing the consensus
between trajectory optimization and policy learning"): PDDP (their Alg. 1) and PLAL (Alg. 2,
ADMM), with stochastic Sobolev learning on the DDP gains and the control box inside the OC phase.

Modules: :mod:`.config` (one YAML per run), :mod:`.systems` (the OCPs: constrained LQR,
pendulum, double pendulum), :mod:`.consensus` (the augmented-Lagrangian term as a Crocoddyl
action model, with its exact derivatives through the policy), :mod:`.oc_phase` (the OCP solves,
run on the shared executors), :mod:`.trainer` (the algorithm, top to bottom) and :mod:`.plots`.

Nothing is imported here, so that solver workers never load torch.
"""
