"""The functional core: Headroom's decisions as pure, typed functions on plain data.

Nothing here does I/O or reads a clock: no Kubernetes client, no HTTP, no asyncio, no time or
randomness, no environment. Time comes in as an argument; results go out as values. The shell
(`headroom.shell`) watches the cluster, calls these functions and writes what they decide.
tests/unit/test_layout.py keeps it so.
"""
