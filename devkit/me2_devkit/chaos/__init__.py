"""The reliability proof: a chaos run of the real service, then an audit of what it did.

``runner.run_chaos`` starts MariaDB, Redis, the Action simulator and
``me2-scheduler run`` on compressed time, enables the avatars, and lets the
``injector`` carry out a seeded ``plan`` of faults (kill -9 of children, Redis
lost, MariaDB stopped, Action failing then slow, a second supervisor) while
``journal.RpcBurst`` calls pause/resume/trigger on random avatars. ``audit``
then checks DESIGN §2.3's invariants against the history table, the
schedules, the simulator's per-key counts, the RPC journal and the fault
windows; ``report`` prints the figures and writes ``docs/RELIABILITY.md``.

The in-flight scenario (``--scenario inflight``) runs with MaxInFlight 400:
Action slow (1 s a call), then failing half its calls, then down (a
``gate.Gate`` shuts its port), and ``breaker_watch`` checks from the
service's metrics that the breaker opened while Action was down and closed
after.
"""
