"""The notebook helpers draw on Matplotlib's Agg backend; every figure a test leaves open is checked
(:func:`localmamba.notebook.common.check_figure`: each panel that plots data shows some of it) and closed."""
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@pytest.fixture(autouse=True)
def _check_and_close_figures(request):
    yield
    try:
        if "no_figure_check" not in request.keywords:
            from localmamba.notebook.common import check_figure

            for num in plt.get_fignums():
                check_figure(plt.figure(num))
    finally:
        plt.close("all")
