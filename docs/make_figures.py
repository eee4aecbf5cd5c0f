"""Regenerate the docs' own figures with the library's plotting (the notebooks write the rest).

    python docs/make_figures.py          # -> docs/img/scan_orders.png

The README shows docs/img/scan_orders.png: LocalMamba's scan orders on an 8x8 token grid, drawn by
:func:`localmamba.notebook.scan_orders.plot_scan_grid` (notebook 01 draws the same on real images).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from localmamba.notebook.common import write_png  # noqa: E402
from localmamba.notebook.scan_orders import plot_scan_grid  # noqa: E402

HERE = Path(__file__).resolve().parent


def main() -> None:
    fig = plot_scan_grid(["h", "v", "w2", "w4_flip"], 8, 8, panel_size=2.6, numbers=False,
                         suptitle="Scan orders on an 8x8 token grid: global (h, v) and windowed (w2, w4_flip)")
    print(write_png(fig, HERE / "img" / "scan_orders.png", dpi=80))


if __name__ == "__main__":
    main()
