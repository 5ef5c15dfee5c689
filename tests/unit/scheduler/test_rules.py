"""Rules that can never apply are named (``scheduler.rules.ineffective_rules``)."""

from __future__ import annotations

from scheduler.rules import ConnectorPolicy, Override, Rule, ineffective_rules


def test_a_sound_configuration_has_nothing_to_say() -> None:
    policies = {
        "local": ConnectorPolicy("local", priority=10, delete=Rule(delay=30)),
        "archive": ConnectorPolicy("archive", priority=0, copy=Rule(delay=1)),
        "S3": ConnectorPolicy(
            "S3", priority=20, copy=Rule(delay=-1, data_slug={"bam": Override(delay=0)})
        ),
    }
    assert ineffective_rules(policies) == []


def test_every_kind_of_futile_rule_is_named_by_its_key_path() -> None:
    policies = {
        "local": ConnectorPolicy("local", priority=0, delete=Rule(delay=2)),
        "S3": ConnectorPolicy(
            "S3",
            priority=10,
            copy=Rule(
                delay=-1,
                process_type={"data:": Override(delay=-2), "data:bam:": Override(delay=-3)},
            ),
            delete=Rule(min_other_copies=1, data_slug={"big": Override(min_other_copies=2)}),
        ),
    }
    found = ineffective_rules(policies)
    assert found == [
        "connectors.local.config.delete never applies: local has the lowest priority (0), so "
        "its copy is always an item's preferred one, which is never deleted (give another "
        "connector a lower priority)",
        "connectors.S3.config.delete.data_slug.big.min_other_copies: 2 other copies can never "
        "exist with 1 other connector(s) configured: never deleted",
        "connectors.S3.config.copy never applies: every delay is negative",
        "connectors.S3.config.copy.process_type: 'data:' and 'data:bam:' overlap: the longest "
        "matching key applies here (the original took the first in order)",
    ]


def test_a_copy_rule_with_nothing_to_copy_from() -> None:
    policies = {"only": ConnectorPolicy("only", copy=Rule(delay=0))}
    assert ineffective_rules(policies) == [
        "connectors.only.config.copy never applies: no other connector is configured to copy from"
    ]
