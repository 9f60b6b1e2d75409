"""Issue 25's study: the papers' claims on the real embedded model, with seeds and 95%
intervals (``benchmarks/study.py`` is its command; ``benchmarks/README.md`` documents it)."""
