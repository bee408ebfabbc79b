"""DVC stage `report`: study metrics, tables, plots, sample grids and reports/index.html."""

from dreamsolo.stages import report, stage_main

if __name__ == "__main__":
    stage_main(report.run, "report")
