"""DVC stage `report`: study metrics, tables, plots, sample grids and reports/index.html."""

from dreamsolo.cli import stage_main
from dreamsolo.reporting import report_stage

if __name__ == "__main__":
    stage_main(report_stage, "report")
