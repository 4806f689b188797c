"""``secagg bench``: the overhead of each protection mode, measured side by side in one run."""
