"""Configuration: defaults < TOML < environment < flags, validated with actionable messages."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from consumer.config import ConfigError, ServiceConfig
from consumer.config_load import add_arguments, load_config

#: a bootstrap address, for the tests about something else (none at all is refused)
KAFKA = {"PBA_KAFKA_BOOTSTRAP": "k:9092"}


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_defaults_match_the_design() -> None:
    config = load_config(parse(), environ=KAFKA)
    assert config.input_topic == "network.metrics"
    assert config.output_topic == "bandwidth.predictions"
    assert config.dlq_topic == "network.metrics.dlq"
    assert config.mode == "auto" and not config.embedded_broker


def test_layers_override_in_order(tmp_path: Path) -> None:
    toml = tmp_path / "pba.toml"
    toml.write_text('group_id = "from-file"\nmode = "internet"\nbatch_max = 64\nmetrics_port = 1\n')
    env = {"PBA_CONFIG": str(toml), "PBA_MODE": "datacenter", "PBA_KAFKA_BOOTSTRAP": "k:9092",
           "PBA_METRICS_PORT": "2"}
    config = load_config(parse("--metrics-port", "3"), environ=env)
    assert config.group_id == "from-file"  # file only
    assert config.batch_max == 64
    assert config.mode == "datacenter"  # env beats file
    assert config.bootstrap == "k:9092"
    assert config.metrics_port == 3  # flag beats env


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(parse(), environ={
            **KAFKA, "PBA_IDEMPOTENT": "maybe", "PBA_METRICS_PORT": "x", "PBA_MODE": "edge"})
    text = str(caught.value)
    assert "idempotent" in text and "not a boolean" in text
    assert "metrics_port (PBA_METRICS_PORT)" in text


def test_semantic_checks_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(parse("--bootstrap", "kafka", "--batch-max", "0", "--security-protocol", "SASL_SSL",
                          "--ssl-cafile", str(tmp_path / "missing.pem"), "--max-future-s", "-1"),
                    environ=KAFKA)
    text = str(caught.value)
    assert "bootstrap 'kafka' must look like HOST:PORT" in text
    assert "batch_max must be at least 1" in text
    assert "needs sasl_username and sasl_password" in text
    assert "ssl_cafile" in text and "does not exist" in text
    assert "max_future_s must be >= 0 (0: no limit)" in text


def test_an_unknown_codec_is_refused_with_the_ones_kafka_has() -> None:
    assert load_config(parse("--compression", "zstd"), environ=KAFKA).compression == "zstd"
    with pytest.raises(ConfigError, match="compression must be one of none, gzip, snappy, lz4, zstd"):
        load_config(parse(), environ={"PBA_COMPRESSION": "br"})


def test_the_start_position_of_a_new_group_is_earliest_unless_latest_is_asked() -> None:
    assert load_config(parse(), environ=KAFKA).start_at == "earliest"
    assert load_config(parse("--start-at", "latest"), environ=KAFKA).start_at == "latest"
    with pytest.raises(ConfigError, match="start_at must be earliest or latest, got 'newest'"):
        load_config(parse(), environ={"PBA_START_AT": "newest"})


def test_a_bad_flags_file_stops_start_up_with_the_reason(tmp_path: Path) -> None:
    flags = tmp_path / "flags.toml"
    flags.write_text('rollout_percent = "half"\n')
    with pytest.raises(ConfigError, match="flags_file .*flags.toml: rollout_percent must be a whole number"):
        load_config(parse("--flags-file", str(flags)), environ=KAFKA)
    flags.write_text("rollout_percent = 50\n")
    assert load_config(parse("--flags-file", str(flags)), environ=KAFKA).flags_file == flags


def test_unknown_toml_keys_and_bad_toml_are_errors(tmp_path: Path) -> None:
    toml = tmp_path / "pba.toml"
    toml.write_text("modee = 'auto'\n")
    with pytest.raises(ConfigError, match="unknown setting 'modee'; did you mean mode?"):
        load_config(parse("--config", str(toml)), environ=KAFKA)
    toml.write_text("mode = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(parse("--config", str(toml)), environ=KAFKA)


def test_secrets_are_redacted_and_reach_the_kafka_client() -> None:
    config = ServiceConfig(security_protocol="SASL_PLAINTEXT", sasl_username="svc",
                           sasl_password="hunter2", sasl_mechanism="SCRAM-SHA-512")
    assert "hunter2" not in str(config.redacted())
    kwargs = config.kafka_security()
    assert kwargs["sasl_plain_password"] == "hunter2"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"


async def test_static_membership_is_off_unless_an_instance_id_is_given() -> None:
    from consumer.clients import make_clients

    assert load_config(parse(), environ=KAFKA).group_instance_id is None
    config = load_config(parse("--bootstrap", "k:9092"), environ={"PBA_GROUP_INSTANCE_ID": "pba-0"})
    assert config.group_instance_id == "pba-0"
    consumer, producer, history = make_clients(config, "k:9092")
    assert consumer._group_instance_id == "pba-0" and history._group_instance_id is None
    await producer.stop()


def test_without_a_bootstrap_it_refuses_to_start_and_names_both_ways_to_give_one() -> None:
    """A pod whose bootstrap setting is missing must not look healthy on an in-memory broker."""
    with pytest.raises(ConfigError) as caught:
        load_config(parse(), environ={})
    assert "--bootstrap HOST:PORT (env PBA_KAFKA_BOOTSTRAP)" in str(caught.value)
    assert "--embedded-broker" in str(caught.value)
    assert load_config(parse("--embedded-broker"), environ={}).embedded_broker
    assert load_config(parse(), environ={"PBA_EMBEDDED_BROKER": "true"}).embedded_broker
    with pytest.raises(ConfigError, match="--bootstrap and --embedded-broker are both set"):
        load_config(parse("--embedded-broker"), environ=KAFKA)


def test_a_misspelt_environment_variable_is_named_with_the_nearest_setting() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(parse(), environ={**KAFKA, "PBA_BOOTSTRAP": "kafka:9092", "PBA_MAX_LINK": "5"})
    text = str(caught.value)
    assert "environment variable PBA_BOOTSTRAP is not a setting; did you mean PBA_KAFKA_BOOTSTRAP?" in text
    assert "PBA_MAX_LINK is not a setting; did you mean PBA_MAX_LINKS?" in text


def test_variables_that_are_not_settings_but_not_typos_pass() -> None:
    """Kubernetes sets service links for a Service named pba-stream in every pod of its
    namespace; the tools and tests read a few PBA_ variables of their own."""
    environ = {**KAFKA, "PBA_STREAM_SERVICE_HOST": "10.0.0.7", "PBA_STREAM_SERVICE_PORT": "9308",
               "PBA_STREAM_SERVICE_PORT_METRICS": "9308", "PBA_STREAM_PORT": "tcp://10.0.0.7:9308",
               "PBA_STREAM_PORT_9308_TCP": "tcp://10.0.0.7:9308", "PBA_STREAM_PORT_9308_TCP_ADDR": "10.0.0.7",
               "PBA_TRACES_DIR": "/traces", "PBA_RELIABILITY_SCALE": "2", "OTHER_THING": "x"}
    assert load_config(parse(), environ=environ).bootstrap == "k:9092"


def test_toml_top_level_keys_and_a_pba_table_are_both_read(tmp_path: Path) -> None:
    toml = tmp_path / "pba.toml"
    toml.write_text('group_id = "top"\n[pba]\nmode = "internet"\n')
    config = load_config(parse("--config", str(toml)), environ=KAFKA)
    assert (config.group_id, config.mode) == ("top", "internet")
    toml.write_text('group_id = "top"\n[pba]\nmodde = "internet"\n')
    with pytest.raises(ConfigError, match=r"pba.toml \[pba\]: unknown setting 'modde'; did you mean mode"):
        load_config(parse("--config", str(toml)), environ=KAFKA)
    toml.write_text('mode = "datacenter"\n[pba]\nmode = "internet"\n')
    with pytest.raises(ConfigError, match="mode is set both at the top level and in \\[pba\\]"):
        load_config(parse("--config", str(toml)), environ=KAFKA)
