"""What a line PC needs to be part of a plant: verdicts to the line over MQTT (with a
durable outbox), a Prometheus endpoint, a local queue for results while the database
server is unreachable, and verified local copies of models from a shared store."""
