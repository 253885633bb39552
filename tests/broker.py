"""A real Mosquitto on a free localhost port, for tests that must never mock MQTT.

The code lives in benchmarks/mosquitto.py, which the broker benchmarks share.
"""

from benchmarks.mosquitto import Broker, free_port, mosquitto_binary

__all__ = ["Broker", "free_port", "mosquitto_binary"]
