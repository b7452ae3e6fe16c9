"""The layers that make ``cemnet bench``'s comparison fair compute the same functions as the CNN's own."""

import pytest
import torch

from cemnet.bench.fair_twins import (
    BlockMaxPool2d,
    UniformMaskDropout,
    make_fair,
    split_options,
)
from cemnet.models import create_model


def _layers(model, kind):
    return [m for m in model.modules() if isinstance(m, kind)]


def test_block_pool_cnn_computes_the_same_function():
    standard = create_model("lenet5").train()
    blocked = make_fair(create_model("lenet5"), block_pool=True).train()
    blocked.load_state_dict(standard.state_dict())  # pools hold no state: same keys
    assert len(_layers(blocked, BlockMaxPool2d)) == 2 and not _layers(blocked, torch.nn.MaxPool2d)
    x = torch.randn(8, 1, 28, 28)
    logits = []
    for model in (standard, blocked):
        torch.manual_seed(0)  # the same dropout masks
        logits.append(model(x))
        logits[-1].logsumexp(1).sum().backward()
    assert torch.equal(logits[0], logits[1])
    for a, b in zip(standard.parameters(), blocked.parameters()):
        assert torch.equal(a.grad, b.grad)
    with torch.no_grad():  # inference takes the fast pooling path
        assert torch.equal(standard.eval()(x), blocked.eval()(x))


@pytest.mark.parametrize("name", ["lenet5", "vgg-small", "cemnet-mnist"])
def test_uniform_dropout_mask_replaces_every_bernoulli_dropout(name):
    standard, uniform = create_model(name), make_fair(create_model(name), dropout_mask="uniform")
    dropouts = [type(layer) for layer in _layers(standard, torch.nn.Dropout)]
    assert dropouts and set(dropouts) == {torch.nn.Dropout}  # the default stays PyTorch's
    replaced = _layers(uniform, torch.nn.Dropout)
    assert len(replaced) == len(dropouts) and all(isinstance(layer, UniformMaskDropout) for layer in replaced)
    assert [layer.p for layer in replaced] == [layer.p for layer in _layers(standard, torch.nn.Dropout)]
    uniform.load_state_dict(standard.state_dict())  # dropout holds no state: same keys
    x = torch.randn(4, standard.spec.in_channels, standard.spec.image_size, standard.spec.image_size)
    with torch.no_grad():  # identity at evaluation, so the same function
        torch.testing.assert_close(uniform.eval()(x), standard.eval()(x))
    with pytest.raises(ValueError, match="dropout_mask must be one of"):
        make_fair(create_model(name), dropout_mask="gaussian")


def test_uniform_mask_dropout_has_the_law_of_dropout(kernels):
    torch.manual_seed(0)
    x = torch.randn(1000, 1000).abs() + 0.5  # no zeros, so a zero output is a dropped number
    for p in (0.2, 0.5):
        layer = UniformMaskDropout(p).train()
        out = layer(x)
        kept = out != 0
        # binomial: the keep rate of 1e6 draws within 5 standard deviations of 1 - p
        assert abs(kept.double().mean().item() - (1 - p)) < 5 * (p * (1 - p) / x.numel()) ** 0.5
        torch.testing.assert_close(out[kept], x[kept] / (1 - p))  # kept numbers scaled as by nn.Dropout
        rows = kept.double().mean(1)  # independent draws: no row far from the rate either
        assert (rows - (1 - p)).abs().max() < 6 * (p * (1 - p) / 1000) ** 0.5
        assert "p=" + str(p) in repr(layer)


def test_uniform_mask_dropout_gradient_eval_and_edge_rates(kernels):
    x = torch.randn(64, 32, requires_grad=True)
    layer = UniformMaskDropout(0.5)
    torch.manual_seed(1)
    out = layer(x)
    out.backward(torch.ones_like(out))
    torch.testing.assert_close(x.grad, (out != 0).float() * 2.0)  # d out / d x is the factor
    torch.manual_seed(1)
    torch.testing.assert_close(layer(x.detach()), out.detach())  # seeded: the same mask
    assert layer.eval()(x) is x and UniformMaskDropout(0.0)(x) is x
    assert torch.equal(UniformMaskDropout(1.0)(x), torch.zeros_like(x))  # no division by zero
    y = torch.randn(8, 8)
    assert UniformMaskDropout(0.3, inplace=True)(y) is y
    with pytest.raises(ValueError, match="between 0 and 1"):
        UniformMaskDropout(1.5)


def test_fairness_options_are_split_from_model_options():
    assert split_options({"block_pool": True, "half_spectrum": True, "dropout_mask": "uniform"}) == (
        {"half_spectrum": True}, {"block_pool": True, "dropout_mask": "uniform"})
    assert "kernel_size=2" in repr(BlockMaxPool2d(2))
