"""The benchmark behind ``me2-dev bench``.

It starts its own MariaDB, Redis and Action simulator on free ports, runs the
real service (``me2-scheduler run``) against them, and measures:

- ``scenarios``: burst (dispatches/s of a backlog), steady (lag at a fixed
  rate) and footprint (RSS and CPU per process under the burst);
- ``latency``: burst and steady at Action latencies of 0 to 1,000 ms, for
  ``Schedule.MaxInFlight`` 10 (the seed's) and 400, against the ideal
  ``MaxInFlight / latency`` and the CPU ceiling;
- ``scale``: claim, rebuild, verify and sweep at 10 k to 1 M avatars, Redis
  memory and MySQL size;
- ``limits``: what the box gives each part alone (gRPC calls/s, MariaDB
  transactions/s, Redis claims/s), so that every headline figure can be
  read as a share of the limit it is bound by;
- ``profile``: py-spy samples of one worker under the burst.

``report`` holds the targets and renders the Markdown; ``runner`` runs the
scenarios a number of times and keeps each figure's median.
"""
