"""What a run shows and records while it trains: metrics to JSONL, and a live loss curve in notebooks."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from avlib.viz import history_figure

__all__ = ["LivePlot", "in_notebook", "read_jsonl", "write_jsonl"]


def in_notebook() -> bool:
    """True inside a Jupyter kernel (including Colab), False in scripts and plain IPython."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ in ("ZMQInteractiveShell", "Shell")


class LivePlot:
    """A loss curve that grows while training, in a notebook.

    A plotly FigureWidget is updated in place where it can be built (plotly >= 6 needs ``anywidget`` for it);
    otherwise a plain figure is redrawn at most every few seconds. At the end the output is replaced by a static
    figure, so an executed notebook (and the book page built from it) keeps the final curve.
    """

    def __init__(self) -> None:
        self.handle: Any = None
        self.widget: Any = None
        self.last_draw = 0.0

    def update(self, history: Sequence[Mapping[str, float]], final: bool = False) -> None:
        from IPython.display import display

        fig = history_figure(history, title="training loss")
        # A plotly figure displays itself through its own _ipython_display_, which ignores display ids: hand IPython
        # the rendered bundle instead, so every redraw replaces the one output rather than appending another.
        bundle = fig._repr_mimebundle_()
        if self.handle is None:
            try:
                import plotly.graph_objects as go

                self.widget = go.FigureWidget(fig)
                self.handle = display(self.widget, display_id=True)
            except ImportError:
                self.handle = display(bundle, raw=True, display_id=True)
        elif final:
            self.handle.update(bundle, raw=True)
        elif self.widget is not None:
            with self.widget.batch_update():
                self.widget.data[0].x = [h["step"] for h in history]
                self.widget.data[0].y = [h["loss"] for h in history]
        elif time.monotonic() - self.last_draw > 3.0:
            self.handle.update(bundle, raw=True)
        self.last_draw = time.monotonic()


def read_jsonl(path: Path | None) -> list[dict[str, Any]]:
    """The rows of a JSONL file (none if it does not exist); a last line cut short by a kill is skipped."""
    if path is None or not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def write_jsonl(path: Path | None, rows: Sequence[Mapping[str, Any]]) -> None:
    """Replace ``path`` with ``rows`` atomically."""
    if path is None:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.replace(tmp, path)
