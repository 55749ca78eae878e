"""The student's arrays in Flower messages: one bundle, float32 as they are or float16 (`federation.wire_dtype`) both ways."""

import json

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from safetensors.numpy import load as load_safetensors

from fedtosc.cli import main
from fedtosc.config import ConfigError, load_config
from fedtosc.federation.payloads import payload_bytes
from fedtosc.federation.wire import BUNDLE, WireFormatError, from_wire, received_state, state_to_wire, to_wire, wire_nbytes
from fedtosc.results import read_results
from server.checkpoint import load_checkpoint
from server.screening import update_problem
from server.strategies import make_strategy


def _model(seed: int = 0) -> ArrayRecord:
    """A student-like record: float32 weights of mixed magnitudes, an int64 step counter, a bool mask."""
    rng = np.random.default_rng(seed)
    return ArrayRecord({
        "conv.weight": Array(rng.normal(0, 0.1, (8, 3, 3, 3)).astype(np.float32)),
        "bn.running_var": Array(rng.uniform(0.5, 300.0, 8).astype(np.float32)),
        "bn.num_batches_tracked": Array(np.array(123_456_789_012, dtype=np.int64)),
        "mask": Array(np.array([True, False, True])),
    })


def _carried(sent: ArrayRecord) -> dict[str, np.ndarray]:
    """The arrays a bundle holds, as they travel (before `from_wire` widens them)."""
    assert list(sent.keys()) == [BUNDLE]
    return load_safetensors(sent[BUNDLE].numpy().tobytes())


def test_float16_halves_the_float_arrays_and_comes_back_float32_within_fp16_rounding_ints_exact():
    model = _model()
    carried = _carried(to_wire(model, "float16"))
    assert {name: str(values.dtype) for name, values in carried.items()} == {
        "conv.weight": "float16", "bn.running_var": "float16", "bn.num_batches_tracked": "int64", "mask": "bool"}
    floats = 8 * 3 * 3 * 3 + 8
    assert sum(values.nbytes for values in carried.values()) == 2 * floats + 8 + 3
    assert sum(values.nbytes for values in _carried(to_wire(model, "float32")).values()) == 4 * floats + 8 + 3

    received = from_wire(to_wire(model, "float16"), "float16")
    assert list(received.keys()) == list(model.keys())  # in the sender's order
    for name, original in model.items():
        before, after = original.numpy(), received[name].numpy()
        assert after.dtype == before.dtype and after.shape == before.shape
        if before.dtype == np.float32:
            # Rounded to the nearest float16: within 2^-11 relative (11 significant bits), or 2^-25
            # absolute for the values below 6.1e-5 that float16 holds as subnormals.
            np.testing.assert_array_equal(after, before.astype(np.float16).astype(np.float32))
            np.testing.assert_allclose(after, before, rtol=2.0**-11, atol=2.0**-25)
            assert not np.array_equal(after, before)  # it did go through float16
        else:
            np.testing.assert_array_equal(after, before)


def test_float32_on_the_wire_carries_every_value_bit_for_bit_in_the_senders_order():
    model = _model()
    received = from_wire(to_wire(model, "float32"), "float32")
    assert list(received.keys()) == list(model.keys())
    for name, original in model.items():
        assert received[name].dtype == original.dtype and received[name].shape == original.shape
        assert received[name].numpy().tobytes() == original.numpy().tobytes()


def test_a_torch_state_goes_as_the_same_bundle_and_comes_back_as_the_same_tensors():
    model = _model()
    state = model.to_torch_state_dict()
    for wire_dtype in ("float32", "float16"):
        assert state_to_wire(state, wire_dtype)[BUNDLE].data == to_wire(model, wire_dtype)[BUNDLE].data
    back = received_state(state_to_wire(state, "float32"), "float32")
    assert list(back) == list(state)
    assert all(back[name].dtype == state[name].dtype and bool((back[name] == state[name]).all()) for name in state)
    back["conv.weight"] += 1  # the receiver trains on what it got: its own, writable tensors


@pytest.mark.usefixtures("_server_process_identity")
def test_a_model_message_is_a_handful_of_flower_objects_however_many_arrays_it_has():
    """Flower 1.42 moves each object of a message in a request of its own, at every hop."""
    from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

    many = ArrayRecord({f"layer{i}.weight": Array(np.full((4, 4), i, np.float32)) for i in range(40)})
    objects = {
        how: len(get_all_nested_objects(Message(RecordDict({"arrays": record}), dst_node_id=2, message_type="train")))
        for how, record in (("named", many), ("bundle", to_wire(many, "float32")))
    }
    assert objects["named"] > 40
    assert objects["bundle"] <= 6


def test_the_unpacked_arrays_are_the_bytes_flower_itself_would_make_and_give_their_own_copies():
    model = _model()
    received = from_wire(to_wire(model, "float32"), "float32")
    for name, original in model.items():
        rebuilt = Array(original.numpy())  # np.save's bytes
        assert (received[name].dtype, received[name].shape, received[name].stype) == (rebuilt.dtype, rebuilt.shape, rebuilt.stype)
        assert received[name].data == rebuilt.data
        values = received[name].numpy()
        np.testing.assert_array_equal(values, original.numpy())
        values[...] = 0  # a copy: what the next caller gets is untouched
        np.testing.assert_array_equal(received[name].numpy(), original.numpy())


@pytest.mark.parametrize("wire_dtype", ["float32", "float16"])
def test_wire_nbytes_is_the_byte_count_of_what_to_wire_sends(wire_dtype):
    model = _model()
    assert wire_nbytes(model, wire_dtype) == payload_bytes(RecordDict({"arrays": to_wire(model, wire_dtype)}))


def test_a_foreign_or_damaged_bundle_is_a_named_error():
    with pytest.raises(WireFormatError, match="another fedtosc version"):
        from_wire(_model(), "float32")  # named arrays, as a sender without bundles sends them
    blob = to_wire(_model(), "float32")[BUNDLE].numpy().tobytes()
    for damaged in (blob[:-5], blob[:20], b"\xff" * 8 + blob[8:]):
        with pytest.raises(WireFormatError, match="damaged"):
            received_state(ArrayRecord({BUNDLE: Array(np.frombuffer(damaged, np.uint8))}), "float32")


def test_a_value_beyond_float16s_range_arrives_as_inf_and_screening_rejects_the_update():
    update = ArrayRecord({"w": Array(np.array([1.0, 7e4], dtype=np.float32))})
    with np.errstate(over="ignore"):
        received = from_wire(to_wire(update, "float16"), "float16")
    assert update_problem(received, {"w": ((2,), "float32")}) == "w holds NaN or inf values"


def test_the_wire_dtype_defaults_to_float32_and_a_wrong_value_names_the_key_and_the_choices():
    assert load_config().federation.wire_dtype == "float32"
    assert load_config(["federation.wire_dtype=float16"]).federation.wire_dtype == "float16"
    with pytest.raises(ConfigError) as error:
        load_config(["federation.wire_dtype=bfloat16"])
    assert str(error.value) == "federation.wire_dtype='bfloat16' is not one of ['float32', 'float16']"


@pytest.fixture
def _server_process_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flower stamps a message with its process's task identity, which a ServerApp process has set."""
    from flwr.supercore.task_identity import TaskIdentity

    for name in ("_task_id", "_run_id", "_node_id"):
        monkeypatch.setattr(TaskIdentity, name, 1)


class _Grid:
    def get_node_ids(self) -> list[int]:
        return [1, 2]


@pytest.mark.usefixtures("_server_process_identity")
def test_the_strategy_sends_float16_and_screens_and_aggregates_the_replies_in_float32():
    config = load_config(["federation.num_clients=2", "channel.clients='awgn:10'", "federation.wire_dtype=float16"])
    screened = []
    strategy = make_strategy(config, lambda _round, accepted, _rejected: screened.extend(accepted))
    global_model = _model()
    messages = list(strategy.configure_train(1, global_model, ConfigRecord(), _Grid()))
    assert [_carried(message.content.array_records["arrays"])["conv.weight"].dtype for message in messages] == [np.float16] * 2

    updates = [_model(seed) for seed in (1, 2)]
    replies = [
        Message(RecordDict({"arrays": to_wire(update, "float16"), "metrics": MetricRecord({"num-examples": count})}),
                reply_to=message)
        for message, update, count in zip(messages, updates, (1, 3), strict=True)
    ]
    aggregated, _ = strategy.aggregate_train(1, replies)

    # The replies the round's traffic counts are the ones the wire carried.
    assert [_carried(record.array_records["arrays"])["conv.weight"].dtype for record in screened] == [np.float16] * 2
    # The average is taken over the float16 values, widened to float32 first.
    rounded = [from_wire(to_wire(update, "float16"), "float16") for update in updates]
    for name in ("conv.weight", "bn.running_var"):
        expected = rounded[0][name].numpy() * 0.25
        expected += rounded[1][name].numpy() * 0.75
        assert aggregated[name].dtype == "float32"
        np.testing.assert_array_equal(aggregated[name].numpy(), expected)
    counter = aggregated["bn.num_batches_tracked"]
    assert (counter.dtype, counter.numpy()) == ("int64", 123_456_789_012)  # the step counter, exactly


@pytest.mark.usefixtures("_server_process_identity")
def test_an_update_that_is_not_an_intact_bundle_is_rejected_by_name_and_the_round_goes_on():
    config = load_config(["federation.num_clients=2", "channel.clients='awgn:10'"])
    rejections = []
    strategy = make_strategy(config, lambda _round, _accepted, rejected: rejections.extend(rejected))
    messages = list(strategy.configure_train(1, _model(), ConfigRecord(), _Grid()))
    replies = [
        Message(RecordDict({"arrays": to_wire(_model(1), "float32"), "metrics": MetricRecord({"num-examples": 1})}),
                reply_to=messages[0]),
        Message(RecordDict({"arrays": _model(2), "metrics": MetricRecord({"num-examples": 1})}), reply_to=messages[1]),
    ]
    aggregated, _ = strategy.aggregate_train(1, replies)

    np.testing.assert_array_equal(aggregated["conv.weight"].numpy(), _model(1)["conv.weight"].numpy())
    assert [rejected["node-id"] for rejected in rejections] == [2]
    assert "another fedtosc version" in rejections[0]["problem"]


@pytest.mark.slow
def test_a_float16_federation_sends_half_the_bytes_each_way_and_keeps_a_float32_global_model(tmp_path, digits_teacher):
    run_dir = tmp_path / "run"
    code = main(["run", f"output_dir={run_dir}", *digits_teacher, "federation.num_clients=2", "federation.rounds=2",
                 "channel.clients='awgn:10,awgn:20'", "channel.eval_snr_db=[20]", "federation.wire_dtype=float16"])
    assert code == 0
    results = read_results(run_dir)
    assert results["federation"]["rounds"] == 2
    assert results["accuracy_vs_snr"]["awgn"]["20.0"] >= 0.7  # it learns (chance is 0.1; 0.89 when written)

    _, state = load_checkpoint(run_dir)
    assert {str(tensor.dtype) for tensor in state.values()} == {"torch.float32", "torch.int64"}  # as the student holds them
    float32 = ArrayRecord(state)
    # Round 2 moves the model alone (round 1 also carries the knowledge broadcast).
    second = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[1])
    clients = len(second["clients"])
    assert clients == 2 and second["rejected"] == []
    assert second["bytes_down"] / clients == wire_nbytes(float32, "float16")
    assert 0.49 < wire_nbytes(float32, "float16") / wire_nbytes(float32, "float32") < 0.51
    # Up: each update is a bundle of the same arrays, so of the same size.
    assert second["bytes_up"] / clients == wire_nbytes(float32, "float16")
