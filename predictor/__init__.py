"""Pure inference: numpy in, numpy out. No Kafka, no asyncio, no I/O beyond loading models.

link_predictor.py is the one path from samples to predictions: linkstate.py keeps every
per-link column (windows from window.py, the mode detector of modes.py, the stream
count, what the link's adaptation learnt...), forecaster.py runs the models (runtime.py,
features.py) or the fallback and blends hybrid rows (confidence.py), adaptation.py adapts
that forecast to each link's own errors, allocation.py turns predictions into transport
parameters. Predicting returns the predictions and their state change; the caller
applies the change of what it publishes. rollout.py names the two predictors a link can
be served by (the models, "v3", and the baseline, "v1"); api.py wraps it all for library
use.
"""
