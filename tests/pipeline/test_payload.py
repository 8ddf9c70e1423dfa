"""Payload and Map item rules: validation of the whole payload, ordering, assignment."""

from __future__ import annotations

import pytest

from rendezvous_pipeline.payload import (
    PayloadError,
    assign_files,
    build_items,
    data_path_field,
    data_path_keys,
    natural_sorted,
    validate_item,
    validate_payload,
)

GOOD = {
    "bucket": "results-bucket",
    "file_limit": "10",
    "batch_size": "512",
    "object_type": "folder",
    "S3_object_name": "model",
    "script": "",
    "result_path": "runs/1",
    "data_bucket": "data-bucket",
    "data_prefix": "partitions/25MB",
    "world_size": "8",
    "rendezvous_endpoint": "rendezvous.example.org:10000",
}


def test_users_payload_with_strings_is_accepted_and_typed() -> None:
    payload = validate_payload(GOOD)
    assert payload.world_size == 8
    assert payload.batch_size == 512
    assert payload.file_limit == 10
    assert payload.max_concurrency == 8
    assert payload.data_bucket == "data-bucket"
    assert payload.result_path == "runs/1"
    assert payload.run_id  # generated when not given


def test_numbers_work_as_well_as_strings() -> None:
    payload = validate_payload({**GOOD, "world_size": 3, "batch_size": 64.0})
    assert (payload.world_size, payload.batch_size) == (3, 64)


def test_every_problem_is_listed_in_one_message() -> None:
    raw = {k: v for k, v in GOOD.items() if k not in ("bucket", "world_size")}
    raw["worldsize"] = 8  # the users' typo
    raw["batch_size"] = "many"
    raw["rendezvous_endpoint"] = "no-port"
    with pytest.raises(PayloadError) as info:
        validate_payload(raw)
    problems = info.value.problems
    text = str(info.value)
    assert "missing field 'bucket'" in text
    assert "missing field 'world_size' (did you mean 'worldsize'?)" in text
    assert "unknown field 'worldsize' (did you mean 'world_size'?)" in text
    assert "batch_size: expected an integer, got 'many'" in text
    assert "rendezvous_endpoint: expected 'host:port'" in text
    assert len(problems) == 5
    assert text.startswith("invalid pipeline payload (5 problems)")


def test_concurrency_below_world_size_is_refused() -> None:
    with pytest.raises(PayloadError, match="below world_size 8"):
        validate_payload({**GOOD, "max_concurrency": 4})
    assert validate_payload({**GOOD, "max_concurrency": 16}).max_concurrency == 16


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("world_size", 0, "world_size: must be at least 1"),
        ("world_size", True, "world_size: expected an integer"),
        ("object_type", "bucket", "object_type: expected 'folder' or 'file'"),
        ("timeout", "-1", "timeout: expected a positive number"),
        ("run_id", "a b", "run_id: use letters"),
        ("bucket", "", "bucket: must not be empty"),
    ],
)
def test_invalid_values(field: str, value: object, fragment: str) -> None:
    with pytest.raises(PayloadError, match=fragment):
        validate_payload({**GOOD, field: value})


def test_not_an_object() -> None:
    with pytest.raises(PayloadError, match="must be a JSON object"):
        validate_payload(["bucket"])


def test_natural_order() -> None:
    names = ["p/10.pt", "p/2.pt", "p/1.pt", "p/part_10_b.pt", "p/part_9_b.pt", "p/a.pt"]
    assert natural_sorted(names) == [
        "p/1.pt",
        "p/2.pt",
        "p/10.pt",
        "p/a.pt",
        "p/part_9_b.pt",
        "p/part_10_b.pt",
    ]


def test_assignment_is_balanced_contiguous_and_keeps_empty_ranks() -> None:
    files = [f"{i}.pt" for i in range(1, 8)]
    blocks = assign_files(files, 3)
    assert blocks == [["1.pt", "2.pt", "3.pt"], ["4.pt", "5.pt"], ["6.pt", "7.pt"]]
    assert assign_files(files[:2], 4) == [["1.pt"], ["2.pt"], [], []]


def test_items_have_the_users_fields_and_data_path_shapes() -> None:
    payload = validate_payload({**GOOD, "world_size": 3, "run_id": "r1"})
    items = build_items(payload, ["a/1.pt", "a/2.pt", "a/3.pt", "a/4.pt"])
    assert [item["RANK"] for item in items] == [0, 1, 2]
    assert items[0]["DATA_PATH"] == ["a/1.pt", "a/2.pt"]
    assert items[1]["DATA_PATH"] == "a/3.pt"  # one key stays a string, as the users had it
    for name in (
        "S3_BUCKET",
        "S3_OBJECT_NAME",
        "SCRIPT",
        "S3_OBJECT_TYPE",
        "WORLD_SIZE",
        "DATA_BUCKET",
        "DATA_PREFIX",
        "RESULT_PATH",
        "BATCH_SIZE",
    ):
        assert name in items[2]
    assert items[2]["WORLD_SIZE"] == 3
    assert items[2]["COMM_NAME"] == "pipeline-r1"
    assert validate_item(items[2])["RANK"] == 2
    empty = build_items(validate_payload({**GOOD, "world_size": 2}), ["x.pt"])[1]
    assert empty["DATA_PATH"] is None


def test_data_path_round_trip() -> None:
    for keys in ([], ["a"], ["a", "b"]):
        assert data_path_keys(data_path_field(keys)) == keys


def test_item_validation_lists_problems() -> None:
    payload = validate_payload({**GOOD, "world_size": 2})
    item = build_items(payload, ["x.pt"])[0]
    with pytest.raises(PayloadError, match="RANK 5 is not below WORLD_SIZE 2"):
        validate_item({**item, "RANK": 5})
    broken = {k: v for k, v in item.items() if k != "DATA_PATH"}
    with pytest.raises(PayloadError, match="missing item field 'DATA_PATH'"):
        validate_item(broken)


def test_relay_is_optional_checked_and_reaches_every_item() -> None:
    assert validate_payload(GOOD).relay == "auto"  # the users' payload, unchanged
    items = build_items(validate_payload({**GOOD, "world_size": 2, "relay": "always"}), ["x"])
    assert [item["RELAY"] for item in items] == ["always", "always"]
    assert validate_item(items[1])["RELAY"] == "always"
    older = {k: v for k, v in items[0].items() if k != "RELAY"}  # an item from before
    assert validate_item(older)["RELAY"] == "auto"
    with pytest.raises(PayloadError) as info:
        validate_payload({**GOOD, "relay": "sometimes", "world_size": 0})
    assert info.value.problems == [
        "world_size: must be at least 1, got 0",
        "relay: expected 'auto' (punch, relay when that fails), 'never' (punch only) or "
        "'always' (relay only), got 'sometimes'",
    ]
    assert "relay" in str(info.value).rsplit("optional:", 1)[1]  # listed as optional
    with pytest.raises(PayloadError, match=r"RELAY: expected 'auto' .* got 'off'"):
        validate_item({**items[0], "RELAY": "off"})
