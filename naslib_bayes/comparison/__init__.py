"""Fair head-to-head comparisons: one grid of (optimizer, dataset, seed) runs (:mod:`.grid`), run
resumably in parallel (:mod:`.runner`, in the worker processes of :mod:`.processes`) into run files
that are reused only when made with the same settings (:mod:`.records`), summarised from the run
files (:mod:`.summary`) and plotted (:mod:`.plots`); one-shot comparisons in :mod:`.oneshot`."""
