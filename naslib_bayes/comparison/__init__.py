"""Fair head-to-head comparisons: one grid of (optimizer, dataset, seed) runs, run resumably in
parallel (:mod:`.runner`), summarised from the run files (:mod:`.summary`) and plotted
(:mod:`.plots`); one-shot comparisons in :mod:`.oneshot`."""
