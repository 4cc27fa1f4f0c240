"""The streaming service (`pba run`) and the CLI. One event, top-down:

- service.py: the poll loop. clients.py makes the Kafka clients from one connection
  config; getmany() brings a batch, and the one inference thread runs
- processor.py on it: decode (schemas/), observe round by round into the per-link state
  (predictor/linkstate.py), then
- routing.py: predict with the predictor the flags give each link (rollout, kill
  switch, shadow), applying only the live predictions' state changes;
- scoring.py: score each link's previous prediction, watch drift;
- processor.py encodes the predictions, dead_letters.py the bad input (messages.py
  holds both, column by column);
- checkpoint.py: hand them to the producer, wait for every acknowledgement, then commit
  the offsets they cover.

Beside the flow: rebuild.py restores the per-link state of newly assigned partitions
(input replayed, sent predictions read back); serving.py loads and reloads the models
and applies the flags' mode; housekeeping.py probes the broker, measures lag;
health.py and metrics.py serve /healthz (with the loops' heartbeat), /readyz and
/metrics. config.py holds every setting and its checks, config_load.py merges flags,
environment and file into it; run.py is `pba run` as a process, workers.py its
`--workers N` (N members of the group in processes of their own, one command).

cli.py is the `pba` command line: `pba run` goes to run.py, every other command to
tools/, the companion tools (bench, simulate, agent, tail, demo, the embedded broker),
which the service never imports; nothing here imports training/ (tests/test_layout.py).
"""
