"""The companion tools: what a person runs beside the service, never the service itself.

bench/ measures the service against ONNX Runtime alone (harness.py runs the parts,
load.py makes and times the traffic, report.py renders the table); simulate.py publishes
synthetic or replayed traces, agent.py this host's own metrics; tail.py prints a topic,
demo.py starts everything for `make demo` and demo_view.py draws its live table;
broker.py wraps the embedded Kafka-protocol broker (`pba broker`, `pba run
--embedded-broker`, the tests). commands.py is what each of their `pba` commands does.

They may import the service's modules and training/ (the simulator and the bench use
its trace reader and generator); nothing outside this package imports them, except the
command line and `pba run --embedded-broker`.
"""
