"""The local cluster for development, the demo and the tests: a real control plane built from Go modules
(controlplane.py, pki.py), one real node (node.py, images.py), kube-state-metrics (ksm.py), client
helpers (kube.py) and Headroom run as a process against it (operator.py).

Dev tooling, not test code: `make cluster-up`, `make demo` and the suite's fixtures all use it.
"""
