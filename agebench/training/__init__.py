"""Training age models on any benchmark agebench reads (issue 15): the heads and losses of the
published methods, backbones cut from registered models, and a cache of eval's own face crops.

Nothing is imported here: torch loads only when a training module is used."""
