"""The reliability proof: a chaos run of the real service, then an audit of what it did.

``runner.run_chaos`` starts MariaDB, Redis, the Action simulator and
``me2-scheduler run`` on compressed time, enables the avatars, and lets the
``injector`` carry out a seeded ``plan`` of faults (kill -9 of children, Redis
lost, MariaDB stopped, Action failing then slow, a second supervisor) while
``journal.RpcBurst`` calls pause/resume/trigger on random avatars. ``audit``
then checks DESIGN §2.3's invariants against the history table, the
schedules, the simulator's per-key counts, the RPC journal and the fault
windows; ``report`` prints the figures and writes ``docs/RELIABILITY.md``.

The network scenario (``--scenario network``, ``netplan``) routes the
service's MariaDB, Redis, Action and etcd traffic through ``faultproxy``
proxies (in a ``proxyhost`` child) and switches them through latency,
jitter, resets, blackhole and half-open; it also freezes the poller and a
worker (SIGSTOP), kills mariadbd and Redis with -9, and starts second
supervisors under libfaketime 45 s behind and ahead (``netfaults``). Its
audit is on the servers' clocks (``servertime``: MySQL's insert time of each
history row, the Action simulator's arrival time of each call), and adds (h),
times from the server clock, and (i), recovery after each fault
(``recovery``). ``me2-dev chaos`` runs ``faults`` then ``network`` by default.

The in-flight scenario (``--scenario inflight``) runs with MaxInFlight 400:
Action slow (1 s a call), then failing half its calls, then down (a
``gate.Gate`` shuts its port), and ``breaker_watch`` checks from the
service's metrics that the breaker opened while Action was down and closed
after.
"""
