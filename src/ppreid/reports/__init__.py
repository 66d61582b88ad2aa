"""Tables and plots built only from finished runs' ``results.json`` files (the ``experiments/`` scripts)."""
