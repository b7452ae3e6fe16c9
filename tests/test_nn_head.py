"""cemnet.nn.head: the grouped two-branch head equals two separate MLPs; the grouped linear map."""

import pytest
import torch
from conftest import DOUBLE, assert_rel_close
from torch import nn

from cemnet import nn as cnn
from cemnet.spectral import to_frequency


def test_two_branch_head_uses_each_part_separately():
    head = cnn.TwoBranchHead(12, (5,), 3).double().eval()
    x = to_frequency(torch.randn(4, 3, 2, 2, **DOUBLE))
    out = head(x)
    assert out.shape == (4, 3) and not out.is_complex()
    changed = torch.complex(x.real, x.imag + 1.0)
    with torch.no_grad():
        head.branches[0].weight[1].zero_()  # group 1: the imaginary branch
    torch.testing.assert_close(head(changed), head(x))  # a dead imaginary branch ignores the imaginary part


class _TwoMLPHead(nn.Module):
    """The head as two separate MLPs (the layout before the grouped one): the reference."""

    def __init__(self, in_features, hidden, num_classes, dropout):
        super().__init__()
        self.real = cnn.mlp_branch(in_features, hidden, 0.2, dropout, True)
        self.imag = cnn.mlp_branch(in_features, hidden, 0.2, dropout, True)
        self.classifier = nn.Linear(2 * hidden[-1], num_classes)

    def forward(self, x):
        return self.classifier(torch.cat([self.real(x.real.flatten(1)), self.imag(x.imag.flatten(1))], 1))


def two_branch_layout(state: dict, head) -> dict:
    """``head``'s state in the keys of :class:`_TwoMLPHead`: grouped weights unstacked, batch-norm vectors halved."""
    out = {}
    for key, value in state.items():
        prefix, found, name = key.partition("branches.")
        if not found:
            out[key] = value.clone()
            continue
        if isinstance(head.branches[int(name.split(".")[0])], cnn.GroupedLinear):
            parts = value.unbind(0)
        else:
            parts = (value, value) if name.endswith("num_batches_tracked") else value.chunk(2)
        out[f"{prefix}real.{name}"], out[f"{prefix}imag.{name}"] = (part.clone() for part in parts)
    return out


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_grouped_head_equals_two_separate_branches(training):
    head = cnn.TwoBranchHead(12, (5, 4), 3, dropout=0.0).double()
    reference = _TwoMLPHead(12, (5, 4), 3, dropout=0.0).double()
    with torch.no_grad():  # statistics and affine parameters that differ between the branches
        for module in head.modules():
            if isinstance(module, nn.BatchNorm1d):
                module.running_mean.normal_(), module.running_var.uniform_(0.5, 2.0)
                module.weight.normal_(), module.bias.normal_()
    reference.load_state_dict(two_branch_layout(head.state_dict(), head))
    head.train(training), reference.train(training)
    x = torch.randn(6, 3, 2, 2, dtype=torch.complex128, requires_grad=True)
    out, expected = head(x), reference(x)
    assert_rel_close(out, expected)
    upstream = torch.randn_like(out)
    grad, weight_grad = torch.autograd.grad(out, (x, head.branches[0].weight), upstream)
    expected_grad, real_grad, imag_grad = torch.autograd.grad(
        expected, (x, reference.real[0].weight, reference.imag[0].weight), upstream)
    assert_rel_close(grad, expected_grad)
    assert_rel_close(weight_grad, torch.stack((real_grad, imag_grad)))
    for key, value in two_branch_layout(head.state_dict(), head).items():  # running statistics updated alike
        assert_rel_close(value.double(), reference.state_dict()[key].double())


def test_grouped_linear_equals_linear_per_block():
    layer = cnn.GroupedLinear(6, 4, groups=2, **DOUBLE)
    blocks = [nn.Linear(3, 2, **DOUBLE) for _ in range(2)]
    with torch.no_grad():
        for index, block in enumerate(blocks):
            block.weight.copy_(layer.weight[index]), block.bias.copy_(layer.bias[index])
    x = torch.randn(5, 7, 6, **DOUBLE, requires_grad=True)  # leading dimensions, as nn.Linear takes them
    out = layer(x)
    expected = torch.cat([block(part) for block, part in zip(blocks, x.split(3, -1))], -1)
    assert_rel_close(out, expected)
    upstream = torch.randn_like(out)
    grads = torch.autograd.grad(out, (x, layer.weight, layer.bias), upstream)
    expected_grads = torch.autograd.grad(expected, (x, *blocks[1].parameters()), upstream)
    assert_rel_close(grads[0], expected_grads[0])
    assert_rel_close(grads[1][1], expected_grads[1])
    assert_rel_close(grads[2][1], expected_grads[2])
    assert torch.autograd.gradcheck(layer, (torch.randn(3, 6, **DOUBLE, requires_grad=True),))


def test_grouped_linear_initialisation_and_errors():
    layer = cnn.GroupedLinear(2 * 400, 2 * 300, groups=2, bias=False)
    bound = 1 / 400**0.5  # nn.Linear(400, 300)'s
    assert layer.bias is None and layer.weight.shape == (2, 300, 400)
    assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.9 * bound
    assert not torch.equal(layer.weight[0], layer.weight[1])  # independent blocks
    assert "groups=2" in repr(layer) and "bias=False" in repr(layer)
    with pytest.raises(ValueError, match="divisible"):
        cnn.GroupedLinear(5, 4, groups=2)
    with pytest.raises(ValueError, match="expected 800 input features"):
        layer(torch.randn(2, 799))


def test_gradcheck_two_branch_head():
    layer = cnn.TwoBranchHead(8, (4,), 3, dropout=0.0).double()
    # A generic complex input: the spectrum of a real map would be Hermitian.
    x = torch.randn(4, 2, 2, 2, dtype=torch.complex128, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))
