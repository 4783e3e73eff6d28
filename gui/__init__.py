"""inspectd-gui: the operators' review app (issue #4).

Modules, one job each:

* :mod:`gui.app` - command-line entry point, opens config and database.
* :mod:`gui.data` - queue, count, poll and export queries on the inspectd schema.
* :mod:`gui.queue_model` - the lazily fetched review-queue table model.
* :mod:`gui.workers` - thread-pool tasks, polling and image prefetching.
* :mod:`gui.images` - decoding images, heatmaps and anomaly-map outlines.
* :mod:`gui.viewer` - synchronised image / heatmap views.
* :mod:`gui.details` - the facts of the current item.
* :mod:`gui.filters` - the filter bar.
* :mod:`gui.decisions` - writing review rows (decide, undo).
* :mod:`gui.feedback` - "overrule and add to the good set" (incremental enrollment).
* :mod:`gui.stats` - per-product statistics, histogram and what-if threshold.
* :mod:`gui.export` - CSV export of the current filter.
* :mod:`gui.main_window` - puts it all together; keys and auto-advance.
* :mod:`gui.demo` - demo/test data: fake results with rendered heatmaps.
"""
