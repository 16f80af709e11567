"""The imperative shell: watches in, writes out, around the decisions of `headroom.core`.

One adapter owns every Kubernetes call (kube.py); the store keeps what the watches showed
(store.py); the reconciler observes, plans with the core and applies the differences (reconcile.py);
Kopf handlers only feed the store (handlers.py); main.py starts it all.
"""
