"""Differential Value Programming (Parag et al. 2022): the trainer (:mod:`.trainer`), its config
(:mod:`.config`), the systems it learns values for (:mod:`.systems`), where their OCPs are solved
(:mod:`.executors`, :mod:`.ground_truth`) and its figures (:mod:`.plots`)."""

from .config import DVPConfig, load_dvp_config
from .trainer import DVPResult, evaluate_value, train_dvp

__all__ = ["DVPConfig", "DVPResult", "evaluate_value", "load_dvp_config", "train_dvp"]
