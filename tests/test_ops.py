import pytest

from cemnet.models import create_model
from cemnet.ops import count_ops, fft_ops


def test_vgg_small_is_the_papers_68_10m():
    counts = count_ops(create_model("vgg-small"))
    assert counts.forward == 68_097_024 and counts.backward == counts.forward


def test_vgg_large_convolutions_are_the_papers_275_45m():
    counts = count_ops(create_model("vgg-large"))
    convs = sum(row.forward for row in counts.rows if row.kind == "Conv2d")
    assert convs == 275_447_808
    assert counts.forward == convs + 512 * 512 + 512 * 10


def test_lenet5_counts_and_the_papers_subset():
    counts = count_ops(create_model("lenet5"))
    # conv1 28*28*6*25, conv2 14*14*16*6*25, FC 784*120, 120*84, 84*10
    assert counts.forward == 117_600 + 470_400 + 94_080 + 10_080 + 840
    assert counts.forward - 840 == 692_160  # the paper's figure leaves out the classifier


@pytest.mark.parametrize(
    "name,forward,backward",
    [("cemnet-mnist", 368e3, 481e3), ("cemnet-small", 31.33e6, 50.17e6), ("cemnet-large", 124.39e6, 194.28e6)],
)
def test_cemnet_counts_within_5_percent_of_the_paper(name, forward, backward):
    counts = count_ops(create_model(name))
    assert counts.forward == pytest.approx(forward, rel=0.05)
    assert counts.backward == pytest.approx(backward, rel=0.05)


def test_cemnet_mnist_breakdown_by_hand():
    rows = {row.name: row for row in count_ops(create_model("cemnet-mnist")).rows}
    assert rows["features.1"].forward == 4 * 28 * 28 * 1 * 6
    assert rows["features.6"].forward == 4 * 14 * 14 * 6 * 16
    assert rows["features.2"].forward == 2 * 6 * 28 * 28  # batch norm: one scale per part
    assert rows["features.5"].forward == 6 * (fft_ops(28, 28) + fft_ops(14, 14))  # pool: iFFT + FFT
    assert "features.3" not in rows  # noise layers are the identity at inference


def test_fft_cost_model():
    assert fft_ops(32, 32) == 512 * 10 and fft_ops(1, 1) == 0


def test_autograd_rule_doubles_weight_layers():
    model = create_model("vgg-small")
    assert count_ops(model, rule="autograd").backward == 2 * count_ops(model).forward
    with pytest.raises(ValueError, match="rule must be one of"):
        count_ops(model, rule="guess")


def test_free_storage_has_no_weight_fixation_cost():
    fixed = count_ops(create_model("cemnet-mnist"))
    free = count_ops(create_model("cemnet-mnist", weight_fixation=False))
    assert free.forward == fixed.forward and free.backward == free.forward < fixed.backward
