"""The study report under reports/ (tables, DVC metrics JSON, plots, grids, the HTML page): `build`
writes it; `tables`, `floor`, `checks_table`, `arms`, `plots` and `html` each make one kind of part."""

from dreamsolo.report.build import build_report, pair_grid

__all__ = ["build_report", "pair_grid"]
