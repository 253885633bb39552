"""`yolo-edge-fleet exporter`: every device's retained status, stats and zones as Prometheus metrics.

schema (which stats field is which metric), readings (payloads checked into values), state (the
latest of each device, and whether it is up), metrics (the Collector a scrape runs), command (the CLI).
"""
