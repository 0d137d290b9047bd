"""Several ircish-server nodes as one network, through Redis (the `cluster:` config
section): node.py says how, replica.py what each node keeps. Importing this package
alone does not import redis (a single process never needs it)."""


class ClusterError(Exception):
    """The node cannot join the network (its name is in use, Redis cannot be reached)."""
