"""Helpers for the numbered notebooks, one module per notebook, so that a reader of notebook N finds
its measurements and plots in one file:

- :mod:`.scan_orders` (01): token grids, scan paths, scan locality, padding cost
- :mod:`.selective_scan` (02): discretisation, impulse responses, backend agreement and speed
- :mod:`.models` (03): size and cost, predictions, direction-merge gates, effective receptive fields
- :mod:`.training` (04, 05): curves, confusion matrix, predictions
- :mod:`.common`: saving (and checking) figures, log axes, widget rendering

They sit on top of the library (nothing in it imports them) and need the ``notebooks`` extra
(Matplotlib, pandas, ipywidgets): ``pip install -e ".[notebooks]"``. Every ``plot_*`` draws on an
``ax`` it is given (or a new figure) and returns it, so tests can inspect what it drew.
"""
