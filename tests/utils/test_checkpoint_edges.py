"""load_state_dict / optimizer.load_state_dict at their edges: they check everything before changing anything."""
import numpy as np
import pytest

import minitensor as mt
from minitensor import nn, optim


# ---------------------------------------------------------------------------------------------- load_state_dict
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.out = nn.Linear(4, 2)


def snapshot(module):
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("bad,message", [
    ("abc", 'While copying the parameter named "out.weight", expected a tensor or array from checkpoint but '
            "received str"),
    (None, 'While copying the parameter named "out.weight", expected a tensor or array from checkpoint but '
           "received NoneType"),
    ([[1.0] * 4] * 2, 'While copying the parameter named "out.weight", expected a tensor or array from checkpoint '
                      "but received list"),
    (np.array([["a"] * 4] * 2), 'While copying the parameter named "out.weight", expected a real number dtype '
                                "from checkpoint but received <U1"),
    (np.ones((2, 4), np.complex64), 'While copying the parameter named "out.weight", expected a real number dtype '
                                    "from checkpoint but received complex64"),
    (mt.ones(4, 2), "size mismatch for out.weight: copying a param with shape (4, 2) from checkpoint, the shape in "
                    "current model is (2, 4)."),
])
def test_one_bad_value_names_its_key_and_changes_nothing(bad, message):
    m = Net()
    before = snapshot(m)
    sd = {k: v + 1 for k, v in m.state_dict().items()}  # every other value is good and differs
    sd["out.weight"] = bad
    with pytest.raises(RuntimeError) as info:
        m.load_state_dict(sd)
    assert str(info.value) == f"Error(s) in loading state_dict for Net:\n\t{message}"
    after = snapshot(m)
    for k in before:
        np.testing.assert_array_equal(after[k], before[k], err_msg=k)


def test_every_problem_is_reported_at_once():
    m = Net()
    sd = dict(m.state_dict())
    sd["fc.weight"] = mt.zeros(3, 4)
    sd["out.bias"] = "x"
    sd.pop("fc.bias")
    sd["extra"] = mt.zeros(1)
    with pytest.raises(RuntimeError) as info:
        m.load_state_dict(sd)
    assert str(info.value).split("\n\t")[1:] == [
        'Unexpected key(s) in state_dict: "extra".', 'Missing key(s) in state_dict: "fc.bias".',
        "size mismatch for fc.weight: copying a param with shape (3, 4) from checkpoint, the shape in current "
        "model is (4, 3).",
        'While copying the parameter named "out.bias", expected a tensor or array from checkpoint but received str']


def test_values_of_other_real_dtypes_are_cast_like_pytorch():
    m = nn.Linear(2, 1)
    m.load_state_dict({"weight": np.array([[1, 2]], np.int64), "bias": np.array([True])})
    assert m.weight.dtype == mt.float32
    np.testing.assert_array_equal(m.weight.detach().numpy(), [[1, 2]])
    np.testing.assert_array_equal(m.bias.detach().numpy(), [1])


def test_a_read_only_parameter_is_reported_before_anything_changes():
    m = nn.Linear(2, 1)
    before = snapshot(m)
    m.bias._data.flags.writeable = False
    with pytest.raises(RuntimeError, match='parameter named "bias", the tensor in the current model is read-only'):
        m.load_state_dict({"weight": mt.ones(1, 2), "bias": mt.ones(1)})
    np.testing.assert_array_equal(m.weight.detach().numpy(), before["weight"])


def test_a_state_dict_that_is_not_a_mapping_is_a_type_error():
    with pytest.raises(TypeError, match="Expected state_dict to be dict-like, got list"):
        nn.Linear(2, 1).load_state_dict([("weight", mt.ones(1, 2))])


def test_pytorch_bfloat16_values_load():
    torch = pytest.importorskip("torch", reason="compares with a PyTorch bfloat16 tensor")
    m = nn.Linear(2, 1)
    w = torch.tensor([[1.5, -2.0]], dtype=torch.bfloat16)
    m.load_state_dict({"weight": w, "bias": torch.zeros(1)})
    np.testing.assert_array_equal(m.weight.detach().numpy(), [[1.5, -2.0]])


# ---------------------------------------------------------------------------------------------- optimizer
def trained_adam():
    params = [nn.Parameter(mt.ones(2, 3)), nn.Parameter(mt.ones(3))]
    opt = optim.Adam(params, lr=0.1)
    for p in params:
        p.grad = mt.ones(*p.shape)
    opt.step()
    return params, opt


@pytest.mark.parametrize("edit,message", [
    (lambda sd: sd["state"][1].update(exp_avg=mt.zeros(2)),
     r"loaded optimizer state 'exp_avg' of parameter 1 has shape \(2,\), the parameter has shape \(3,\)"),
    (lambda sd: sd["state"][1].update(exp_avg_sq="x"),
     "loaded optimizer state 'exp_avg_sq' of parameter 1 is a str, not a number or tensor"),
    (lambda sd: sd["state"][1].update(step=mt.ones(2)),
     r"loaded optimizer state 'step' of parameter 1 has shape \(2,\), not one number"),
    (lambda sd: sd["state"].update({7: {}}), "has an entry for parameter 7, which no parameter group lists"),
    (lambda sd: sd.pop("state"), "must be a dict with 'state' and 'param_groups'"),
])
def test_optimizer_checks_everything_before_changing_anything(edit, message):
    params, opt = trained_adam()
    sd = opt.state_dict()
    sd["param_groups"][0]["lr"] = 0.5
    sd["state"] = {i: dict(s) for i, s in sd["state"].items()}
    edit(sd)
    before = {i: {k: v.numpy().copy() for k, v in opt.state[p].items()} for i, p in enumerate(params)}
    with pytest.raises(ValueError, match=message):
        opt.load_state_dict(sd)
    assert opt.param_groups[0]["lr"] == 0.1
    for i, p in enumerate(params):
        assert opt.state[p].keys() == before[i].keys()
        for k, v in before[i].items():
            np.testing.assert_array_equal(opt.state[p][k].numpy(), v)


def test_optimizer_state_round_trips_through_a_checkpoint(tmp_path):
    params, opt = trained_adam()
    mt.save(opt.state_dict(), tmp_path / "o")
    fresh = [nn.Parameter(mt.ones(2, 3)), nn.Parameter(mt.ones(3))]
    opt2 = optim.Adam(fresh, lr=0.1)
    opt2.load_state_dict(mt.load(tmp_path / "o"))
    for a, b in zip(params, fresh):
        for k in ("step", "exp_avg", "exp_avg_sq"):
            np.testing.assert_array_equal(opt.state[a][k].numpy(), opt2.state[b][k].numpy())
