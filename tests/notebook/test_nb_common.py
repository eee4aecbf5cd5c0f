"""localmamba.notebook.common: saving and checking figures, widget rendering."""
import matplotlib.pyplot as plt
import numpy as np
import pytest

from localmamba.notebook import common


def test_save_figure(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    path = common.save_figure(fig, tmp_path / "sub", "x")
    assert path == tmp_path / "sub" / "x.png" and path.read_bytes()[:4] == b"\x89PNG"


def test_figure_to_png():
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    png = common.figure_to_png(fig)
    assert png[:4] == b"\x89PNG" and not plt.fignum_exists(fig.number)


def test_check_figure_finds_panels_that_show_no_data():
    fig, (good, log_bars, off, ref_only) = plt.subplots(1, 4)
    good.bar([0, 1], [3, 5])
    good.set_yscale("log")  # bars that start above 0 stay visible on a log axis
    good.set_ylim(1, 10)
    log_bars.bar([0, 1], [3, 5])  # bars from 0: a log axis masks them, nothing is drawn
    log_bars.set_yscale("log", nonpositive="mask")
    off.plot([0, 1], [0, 1])
    off.set_xlim(5, 6)  # limits that miss the data
    ref_only.plot([0, 1], [0, 1])
    ref_only.set_ylim(2, 3)
    ref_only.axhline(2.5)  # a reference line is not data
    with pytest.raises(ValueError, match=r"axes 1 .*axes 2 .*axes 3"):
        common.check_figure(fig)
    for ax in (log_bars, off, ref_only):
        ax.set_visible(False)
    common.check_figure(fig)  # the good panel passes


def test_check_figure_accepts_images_scatter_and_text_panels(tmp_path):
    fig, (img, pts, text) = plt.subplots(1, 3)
    img.imshow(np.eye(3))
    pts.scatter([1, 2], [3, 4])
    text.text(0.5, 0.5, "a label only")
    text.set_axis_off()
    common.check_figure(fig)
    assert common.save_figure(fig, tmp_path, "ok").is_file()
    pts.set_xlim(10, 11)
    with pytest.raises(ValueError, match="none of their data"):
        common.save_figure(fig, tmp_path, "broken")
    assert not (tmp_path / "broken.png").exists()
    plt.close(fig)  # broken on purpose: not for the fixture's check
