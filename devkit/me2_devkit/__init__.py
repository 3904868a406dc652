"""The me2-scheduler dev kit: what builds confidence in the service, shipped beside it, not in it.

- ``testing``: real MariaDB, Redis, etcd, Prometheus and Redis Cluster servers
  on free loopback ports in temp dirs, and the whole service as a process tree;
- ``simulators``: the Action and Diary gRPC simulators;
- ``bench``: the benchmark (``make bench``);
- ``chaos``: the reliability run and its audit (``make chaos``).

``me2-dev`` is its command (``simulate``, ``bench``, ``chaos``). It is
installed by ``make init`` beside the service and is not in the service's
wheel.
"""
