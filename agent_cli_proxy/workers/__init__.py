"""Background work in plain threads: the loop supervisor and the jobs it runs.

``supervisor`` owns scheduling (intervals, jitter, backoff, one stop event); each job
module owns one concern: ``pricing`` keeps the live price table fresh (the cost backfill,
quota refresh and account correlation join it). Workers may use ``upstream``, ``usage``
and ``storage``; ``web`` never imports this package and sees these objects through
protocols handed over by the composition root.
"""
