"""What every notebook page opens with: its folders, its seed, how it shows tables and figures.

Presentation layer. ``page = open_page(DATASET, SEED, DATA_DIR, FIGURES_DIR)`` resolves the folders
from the project root (wherever the kernel started), seeds the stage, sends log records and progress
bars to the terminal rather than the page, and sets how tables print (three decimals, fitting the
page). :meth:`Page.table` writes a table as CSV + Markdown and shows it; :meth:`Page.figure` saves a
figure and shows it on the page.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from sts_utils.pages import plots
from sts_utils.core.config import check_dataset, dataset_dir, figures_dir, seed_everything, setup_logging, simulated_tag
from sts_utils.core.io import write_table


@dataclass
class Page:
    """One notebook page of one dataset.

    Attributes
    ----------
    dataset, seed
        The page's ``DATASET`` and ``SEED``.
    data_dir
        ``data/<dataset>/`` (stage artifacts).
    figures
        ``figures/<dataset>/`` (the paper's figures and tables).
    tag
        ``" [SIMULATED demo cohort]"`` on the simulated dataset, else empty: every title and caption ends with it.
    rng
        The page's seeded NumPy generator.
    """

    dataset: str
    seed: int
    data_dir: Path
    figures: Path
    tag: str
    rng: np.random.Generator

    def figure(self, fig, name: str) -> None:
        """Save ``fig`` as ``figures/<dataset>/<name>`` and show it here."""
        plots.save(fig, self.figures / name)

    def table(self, df: pd.DataFrame, name: str, caption: str, columns: list[str] | None = None) -> None:
        """Write ``figures/<dataset>/<name>.{csv,md}`` (caption, simulated tag, full stop) and show ``columns`` of it."""
        write_table(df, self.figures / name, caption=f"{caption}{self.tag}.")
        self.show(df if columns is None else df[columns])

    def show(self, df: pd.DataFrame) -> None:
        """Show a table with floats at three decimals."""
        display(df.style.format(precision=3, na_rep="").hide(axis="index") if isinstance(df, pd.DataFrame) else df)

    def say(self, text: str) -> None:
        """Show Markdown text (a reading written from the numbers just computed)."""
        display(Markdown(text))


def open_page(dataset: str, seed: int = 0, data_dir: str | os.PathLike | None = None,
              figures_root: str | os.PathLike | None = None) -> Page:
    """Set up a notebook page: folders from the project root, seeds, logging to the terminal, table display."""
    check_dataset(dataset, data_dir)
    setup_logging()
    rng = seed_everything(seed)
    pd.set_option("display.precision", 3)
    pd.set_option("display.max_columns", 30)
    pd.set_option("display.width", 160)
    return Page(dataset=dataset, seed=seed, data_dir=dataset_dir(dataset, data_dir),
                figures=figures_dir(dataset, figures_root), tag=simulated_tag(dataset), rng=rng)
