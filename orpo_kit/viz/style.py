"""One house style for every figure of the package: readable when projected, safe for colour-blind readers.

`house_style` decorates each figure function. It draws the figure under `HOUSE_RC` (150 dpi, 12-14 pt text,
the Okabe-Ito colour cycle) and fixes that style into the figure before returning it, so the figure looks the
same when a notebook shows it inline later, when it is saved, or when it is redrawn into a live figure.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import matplotlib as mpl
from matplotlib.figure import Figure
from matplotlib.rcsetup import cycler

# Okabe & Ito (2008), "Color Universal Design": eight colours told apart under every common colour-vision deficiency.
OKABE_ITO = {
    "blue": "#0072B2",
    "orange": "#E69F00",
    "bluish_green": "#009E73",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
    "sky_blue": "#56B4E9",
    "yellow": "#F0E442",
    "black": "#000000",
}
PALETTE = list(OKABE_ITO.values())  # the colour cycle, in this order (C0 = blue, C1 = orange, ...)
CHOSEN, REJECTED, PROMPT = OKABE_ITO["bluish_green"], OKABE_ITO["vermillion"], OKABE_ITO["blue"]
ALARM = OKABE_ITO["yellow"]  # background of warnings drawn on a figure (black text on yellow)
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")  # a second cue beside colour, one per series

DPI = 150  # figures on screen (inline in notebooks) and saved PNGs
TICK_PT, LABEL_PT, TITLE_PT, SUPTITLE_PT = 12, 13, 14, 15
HOUSE_RC: dict[Any, Any] = {  # rcParams names -> values
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
    "font.size": LABEL_PT,
    "axes.titlesize": TITLE_PT,
    "axes.labelsize": LABEL_PT,
    "xtick.labelsize": TICK_PT,
    "ytick.labelsize": TICK_PT,
    "legend.fontsize": TICK_PT,
    "legend.title_fontsize": LABEL_PT,
    "legend.framealpha": 0.9,
    "figure.titlesize": SUPTITLE_PT,
    "axes.prop_cycle": cycler(color=PALETTE),
    "axes.grid": True,
    "grid.alpha": 0.3,
    "lines.linewidth": 2.0,
    "lines.markersize": 6,
    "image.cmap": "viridis",
}

P = ParamSpec("P")
R = TypeVar("R")


def house_style(figure_function: Callable[P, R]) -> Callable[P, R]:
    """Decorator for every figure function: build the figure under `HOUSE_RC` and keep that style in it."""

    @functools.wraps(figure_function)
    def styled(*args: P.args, **kwargs: P.kwargs) -> R:
        with mpl.rc_context(HOUSE_RC):
            out = figure_function(*args, **kwargs)
            if isinstance(out, Figure):
                fix_style(out)
        return out

    return styled


def fix_style(fig: Figure) -> None:
    """Give a figure the house dpi and create its ticks now, while `HOUSE_RC` applies: matplotlib makes tick
    labels and grid lines lazily, at the first drawing, from whatever style is current then."""
    fig.set_dpi(DPI)
    fig.draw_without_rendering()
