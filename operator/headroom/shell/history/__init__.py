"""Where a namespace's historical peak usage comes from: Prometheus, Headroom's own sampler, or a file.

The value types (PeakQuery, HistoryResult) and the sampler's daily-peaks codec are pure and live in
headroom.core.history; the sources here do the I/O.
"""
