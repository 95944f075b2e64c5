"""polyfuse-dpo: Direct Preference Optimization over discrete actions (registry name ``dpo``).

Importing this package is cheap; torch is imported by the modules that build
the optimizer (:mod:`polyfuse_dpo.dpo` and its helpers), never here.
"""
