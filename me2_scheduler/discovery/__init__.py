"""go-zero service discovery through etcd: registration, resolution and the etcd client.

- ``etcd_client``: etcd's v3 gRPC API (KV, Lease, Watch, Auth) with deadlines.
- ``registry``: ``Publisher``, the rpc_server's registration under ``<Key>/<lease id>``.
- ``resolver``: ``EndpointWatcher`` (the endpoints under ``<Key>/``) and
  ``EndpointPool`` (a channel per endpoint, one picked per call).
"""
