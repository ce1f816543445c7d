"""matplotlib figures to RGB pixels (HWC uint8), rendered with the Agg canvas as the peers do."""

import numpy as np


def figure_to_rgb(figure, close: bool = True) -> np.ndarray:
    """Render one matplotlib Figure to an (H, W, 3) uint8 array; close it afterwards if asked."""
    if not hasattr(figure, "savefig"):
        raise TypeError(f"figure: expected a matplotlib Figure or a list of them, got {type(figure).__name__}")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    rgb = np.array(canvas.buffer_rgba())[:, :, :3]
    if close:
        import matplotlib.pyplot as plt

        plt.close(figure)
    return rgb
