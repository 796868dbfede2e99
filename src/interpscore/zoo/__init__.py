"""Zoo scans: every unit of many models scored by one metric, with the report."""
