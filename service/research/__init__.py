"""Research tools: Table 1 evaluation, the simulation study, statistics, calibration to ratings."""
