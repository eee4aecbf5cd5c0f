"""What every notebook's helpers share: saving a figure (and checking that it shows its data), log axes
with plain tick labels, PNG rendering for widgets.

:func:`check_figure` is what makes a broken figure fail a test: every axes that draws something must
show some of it inside its visible limits (a bar of height > 0 on a log axis from 0 shows nothing).
"""
from __future__ import annotations

import io
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

__all__ = ["save_figure", "write_png", "check_figure", "plain_log_axis", "plain_log_ticks", "figure_to_png", "PATH_CMAP"]


PATH_CMAP = "plasma"


def save_figure(fig: plt.Figure, figures_dir: str | Path, name: str, dpi: int = 120) -> Path:
    """Save ``fig`` as ``figures_dir/name.png`` (creating the folder) and return the path.

    Raises a ValueError (:func:`check_figure`) instead of writing a figure with a panel that shows none
    of its data."""
    return write_png(fig, Path(figures_dir) / f"{name}.png", dpi=dpi)


def write_png(fig: plt.Figure, path: str | Path, dpi: int = 120) -> Path:
    """Check ``fig`` (:func:`check_figure`) and save it as the PNG ``path`` (creating its folder)."""
    check_figure(fig)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def _offsets_in_data(artist, ax: plt.Axes) -> bool:
    """Whether ``artist`` places its marks at data-coordinate offsets (a scatter's PathCollection)."""
    from matplotlib.collections import Collection

    return (isinstance(artist, Collection) and len(artist.get_offsets()) > 0
            and artist.get_offset_transform().contains_branch(ax.transData))


def _in_data_coords(artist, ax: plt.Axes) -> bool:
    return _offsets_in_data(artist, ax) or artist.get_transform().contains_branch(ax.transData)


def _visible_points(artist, ax: plt.Axes) -> int:
    """How many of ``artist``'s data points land, finite, inside ``ax``'s box on screen (0 = invisible).

    Points go through the artist's own transform, so a log axis maps 0 to -inf: a bar from 0 on a
    log axis, which Matplotlib does not draw, has no visible points here either."""
    from matplotlib.collections import Collection
    from matplotlib.image import AxesImage
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    if isinstance(artist, Line2D):
        pts = artist.get_transform().transform(np.asarray(artist.get_xydata(), dtype=float).reshape(-1, 2))
    elif isinstance(artist, Patch):
        path = artist.get_path()
        if len(path.vertices) == 0:
            return 0
        pts = artist.get_transform().transform(path.vertices)
        if not np.isfinite(pts).all():  # a patch with an unmapped corner is not drawn at all
            return 0
    elif isinstance(artist, AxesImage):
        x0, x1, y0, y1 = artist.get_extent()
        pts = ax.transData.transform(np.array([[x0, y0], [x1, y1], [x0, y1], [x1, y0], [(x0 + x1) / 2, (y0 + y1) / 2]]))
    elif isinstance(artist, Collection):
        if _offsets_in_data(artist, ax):  # scatter: one marker a point
            pts = artist.get_offset_transform().transform(np.asarray(artist.get_offsets(), dtype=float).reshape(-1, 2))
        else:
            verts = [p.vertices for p in artist.get_paths() if len(p.vertices)]
            if not verts:
                return 0
            pts = artist.get_transform().transform(np.concatenate(verts).astype(float))
    else:
        return 0
    box = ax.bbox
    inside = (np.isfinite(pts).all(1) & (pts[:, 0] >= box.x0 - 0.5) & (pts[:, 0] <= box.x1 + 0.5)
              & (pts[:, 1] >= box.y0 - 0.5) & (pts[:, 1] <= box.y1 + 0.5))
    return int(inside.sum())


def check_figure(fig: plt.Figure) -> None:
    """Raise a ValueError naming every axes of ``fig`` that plots data but shows none of it.

    An axes "plots data" when it holds a line, patch, collection or image placed in its data
    coordinates (reference lines such as ``axvline`` and boxes placed in axes coordinates do not
    count); it "shows" it when at least one point of one of them lies, finite, inside the visible
    limits. A text-only panel (a diagram's label) is not checked."""
    empty = []
    for k, ax in enumerate(fig.axes):
        if not ax.get_visible():
            continue
        ax.get_xlim(), ax.get_ylim()  # settles pending autoscaling, so transData is current
        artists = [a for a in (*ax.lines, *ax.patches, *ax.collections, *ax.images)
                   if a.get_visible() and _in_data_coords(a, ax)]
        if artists and not any(_visible_points(a, ax) for a in artists):
            empty.append(f"axes {k} ({ax.get_title() or ax.get_ylabel() or 'untitled'!r})")
    if empty:
        raise ValueError(f"figure {fig.get_suptitle()!r}: {', '.join(empty)} show(s) none of their data inside their limits "
                         "(e.g. bars from 0 on a log axis, or limits that miss the data)")


def plain_log_axis(axis) -> None:
    """Log scale with ticks at 1, 2, 5 x 10^k written as plain numbers (not 2x10^0)."""
    if axis is axis.axes.xaxis:
        axis.axes.set_xscale("log", nonpositive="mask")
    else:
        axis.axes.set_yscale("log", nonpositive="mask")
    plain_log_ticks(axis)


def plain_log_ticks(axis) -> None:
    """Ticks at 1, 2, 5 x 10^k written as plain numbers on an axis that is already logarithmic
    (e.g. a colour bar's over a LogNorm)."""
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FormatStrFormatter("%g"))
    axis.set_minor_formatter(NullFormatter())


def figure_to_png(fig: plt.Figure, dpi: int = 90) -> bytes:
    """Render ``fig`` to PNG bytes and close it (for image widgets)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
