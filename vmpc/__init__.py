"""value-mpc's application layer: the ``vmpc`` command (:mod:`vmpc.cli`), the closed-loop
studies (:mod:`vmpc.studies`) and the benchmarks (:mod:`vmpc.benches`).

The only package that knows every other one: it composes :mod:`sim`, :mod:`mpc` and
:mod:`learning`, which never import it.
"""
