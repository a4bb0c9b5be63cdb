"""The clinical PDF report: its input, numbers and chart, page layout, and assembly from the database."""
