"""The operators' web console, served by the service itself under ``/console/``.

Off unless ``Console.Enabled``. The supervisor's HTTP listener (beside
``/metrics`` and ``/healthz``) passes ``/console/`` requests to the
``console`` child over a Unix socket (``proxy``); the child (``server``)
holds its own MySQL, Redis and Action connections, made after the fork, and
renders the pages (``app``, ``pages``, ``render`` with ``templates/`` and
``static/``). Reads are bounded at any number of avatars (``queries``);
actions go through the gRPC API's own handlers (``actions``); index checks
and rebuilds run in the background (``jobs``). Every page and action needs
credentials (``auth``); every POST a CSRF token (``csrf``).
"""
