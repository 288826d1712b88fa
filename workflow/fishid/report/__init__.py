"""The report stage: figures, the HTML report, the audit and the attribution list."""
