"""Many hosts on one machine: a cluster built out of network namespaces (issue 12, item 4).

``python -m tests.cluster up`` builds it, ``python -m tests.cluster down`` removes it; the
drills in this package use it (docs/deployment.md, "Many hosts: the namespace cluster").
"""
