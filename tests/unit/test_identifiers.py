import pytest

from cinnamon_pool.errors import InvalidIdentifier
from cinnamon_pool.keys import PoolKeys
from cinnamon_pool.model import validate_container_name, validate_pool_name, validate_test_run_id, validate_token

HOSTILE = ["", "x" * 10_000, "a\nb", "*?[", "../etc", "a\x00b", "{pool}", "a b", "a:b}"]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_pool_names_are_rejected_before_any_key_exists(value: str) -> None:
    with pytest.raises(InvalidIdentifier):
        PoolKeys(value)


@pytest.mark.parametrize("value", [*HOSTILE[:6], "run/1", "-leading"])
def test_hostile_test_run_ids_are_rejected(value: str) -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        validate_test_run_id(value)
    assert "test run id" in str(caught.value)


def test_ordinary_identifiers_pass() -> None:
    assert validate_pool_name("qa-pool_1.x") == "qa-pool_1.x"
    assert validate_test_run_id("test-run-123") == "test-run-123"
    assert validate_test_run_id("0b9c1a7e-0d6c-4a53-8d5e-2f6f7e8a9b0c") != ""
    assert validate_container_name("container-001") == "container-001"
    assert validate_token("0123456789abcdef:42:fedcba9876543210").count(":") == 2


def test_every_key_of_a_pool_shares_its_hash_tag() -> None:
    keys = PoolKeys("qa")
    all_keys = [*keys.all_state_keys(), keys.events, keys.leader("host-a"), keys.memory, keys.wake("0" * 32)]
    assert all(key.startswith("cinnamon:{qa}:") for key in all_keys), all_keys
    assert len(set(all_keys)) == len(all_keys), "two parts of the schema share a key"
    with pytest.raises(InvalidIdentifier):
        keys.wake("../../x")
