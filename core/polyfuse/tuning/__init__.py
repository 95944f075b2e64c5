"""``polyfuse tune``: hyperparameter search over any config path with Optuna.

:mod:`.space` reads and checks the search space, :mod:`.runner` runs one trial as an ordinary
``polyfuse run`` in its own process, :mod:`.study` drives the Optuna study (storage, resume,
parallel trials), :mod:`.report` writes the best config, the table of trials and the plots, and
:mod:`.command` ties them to the command line. Optuna is an optional extra (``polyfuse[tune]``),
imported only when a study runs.
"""
