"""The evaluation stage: one inference path (evaluate and predict), metrics."""
