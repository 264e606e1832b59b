"""The fairness notions Faro measures and constrains, by key, and their names in words.

- ``dp``: demographic parity; ``eo``: equalized odds; ``cf``: counterfactual fairness.

Kept free of torch, so that tables and the dashboard's first screen can name the notions without loading the
statistics behind them.
"""

KINDS = ("dp", "eo", "cf")
KIND_LABEL = {"dp": "demographic parity (DP)", "eo": "equalized odds (EO)", "cf": "counterfactual (CF)"}
