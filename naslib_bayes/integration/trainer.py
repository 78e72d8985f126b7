"""NASLib's Trainer with data loaders handed in instead of NASLib's downloading ones.

Importing this module imports NASLib (through :func:`naslib_bayes.integration.load_naslib`).
"""

from __future__ import annotations

from naslib_bayes.errors import UserError
from naslib_bayes.integration import load_naslib

_naslib = load_naslib()


class LoaderTrainer(_naslib.trainer.Trainer):
    """``naslib.defaults.trainer.Trainer`` whose loaders come from the caller.

    NASLib's Trainer calls ``self.build_search_dataloaders(config)`` (search, one-shot
    evaluation) and ``self.build_eval_dataloaders(config)`` (retraining a non-queryable
    architecture); both are static methods there that download CIFAR. Here they return the
    ``(train, valid, test)`` triples given to the constructor. Everything else -- the search
    loop, scheduler, checkpointing, ``errors.json``, benchmark queries -- is NASLib's own.

    Args:
        optimizer, config, lightweight_output: as for NASLib's ``Trainer``.
        search_loaders: ``(train, valid, test)`` for the search phase (one-shot optimizers).
        eval_loaders: ``(train, valid, test)`` for retraining; defaults to ``search_loaders``.
    """

    def __init__(self, optimizer, config, lightweight_output=False, search_loaders=None, eval_loaders=None):
        super().__init__(optimizer, config, lightweight_output=lightweight_output)
        self._search_loaders = search_loaders
        self._eval_loaders = eval_loaders if eval_loaders is not None else search_loaders

    def build_search_dataloaders(self, config):  # a staticmethod in NASLib; called through self
        if self._search_loaders is None:
            raise UserError("this run needs image data for the one-shot search: pass --search-data (and --data-root)")
        return tuple(self._search_loaders)

    def build_eval_dataloaders(self, config):
        if self._eval_loaders is None:
            raise UserError("retraining the final architecture needs image data: pass --search-data (and --data-root)")
        return tuple(self._eval_loaders)
