"""Differential Value Programming (Parag et al. 2022): the trainer (:mod:`.trainer`), its config
(:mod:`.config`), the systems it learns values for (:mod:`.systems`), where their OCPs are solved
(:mod:`.executors`, :mod:`.ground_truth`) and its figures (:mod:`.plots`).

Nothing is imported here, so that solver workers (which import :mod:`.executors`) never load
torch; import from the modules, e.g. ``from learning.dvp.trainer import train_dvp``.
"""
