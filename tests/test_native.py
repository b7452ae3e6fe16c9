"""The native CPU kernels (cemnet._native): their generator, their law, their checks, how they are built and used."""

import os
import time
from pathlib import Path

import pytest
import torch
from conftest import native_kernels_or_skip

from cemnet import _native, runtime
from cemnet import nn as cnn
from cemnet.nn import functional as SF

N = 1_000_000
PROBES = Path(__file__).with_name("csrc") / "probes.cpp"


@pytest.fixture(scope="module")
def kernel():
    return native_kernels_or_skip()


@pytest.fixture(scope="module")
def probes(kernel):
    """Test-only entry points (tests/csrc/probes.cpp) on the kernels' own generator header and flags."""
    return _native.load_extension([PROBES], "cemnet_probes")


def factors(kernel, n: int, a: float, b: float, key: int) -> torch.Tensor:
    out = torch.empty(n)
    kernel.noise_factor(out.numpy(), a, b, key, False)
    return out


def words(probes, n: int, first: int, key: int) -> torch.Tensor:
    out = torch.empty(2 * n, dtype=torch.int32)
    probes.threefry_words(out.numpy().view("uint32"), first, key)
    return out.to(torch.int64) & 0xFFFFFFFF


def ks_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """The two-sample Kolmogorov-Smirnov statistic."""
    x, y = x.sort().values, y.sort().values
    points = torch.cat([x, y])
    cdf_x = torch.searchsorted(x, points, right=True) / len(x)
    cdf_y = torch.searchsorted(y, points, right=True) / len(y)
    return (cdf_x - cdf_y).abs().max().item()


@pytest.mark.parametrize("first,key,expected", [
    # Random123's known-answer vectors for threefry2x32 with 20 rounds (counter words, key words, output words)
    (0, 0, (0x6B200159, 0x99BA4EFE)),
    (2**64 - 1, 2**64 - 1, (0x1CB996FC, 0xBB002BE7)),
    (0x85A308D3_243F6A88, 0x03707344_13198A2E, (0xC4923A9C, 0x483DF7A0)),
])
def test_threefry_known_answers(probes, first, key, expected):
    assert tuple(words(probes, 1, first, key).tolist()) == expected


def test_threefry_blocks_count_on_from_their_first_counter(probes):
    # 130 counters span three blocks of 64 (the last one partial); each word pair is the counter's own.
    many = words(probes, 130, 1000, 7)
    for index in (0, 63, 64, 129):
        assert torch.equal(many[2 * index:2 * index + 2], words(probes, 1, 1000 + index, 7))


def test_kernels_run_on_pytorchs_threads(probes):
    if torch.get_num_threads() < 2:
        pytest.skip("one intra-op thread")
    assert probes.parallel_threads() == torch.get_num_threads()


def test_factor_has_the_law_of_two_independent_normal_factors(kernel):
    a, b = 0.125, 0.25  # the Leaky ReLU's and the dropout's sigma at p = 0.5
    drawn = factors(kernel, N, a, b, key=12345).double()
    for k, (u, v) in enumerate([(1, 1), (1 + a**2, 1 + b**2), (1 + 3 * a**2, 1 + 3 * b**2),
                                (1 + 6 * a**2 + 3 * a**4, 1 + 6 * b**2 + 3 * b**4)], start=1):
        moment = drawn.pow(k)
        error = 5 * moment.std().item() / N**0.5  # five standard errors
        assert abs(moment.mean().item() - u * v) < error, f"raw moment {k}"
    reference = torch.empty(N).normal_(1, a) * torch.empty(N).normal_(1, b)
    assert ks_distance(drawn.float(), reference) < 0.0045  # two-sample KS, about a 1e-4 false alarm rate
    assert abs(torch.corrcoef(torch.stack([drawn[:-1], drawn[1:]]))[0, 1].item()) < 0.005  # neighbours independent


def test_each_gaussian_of_the_pair_is_standard_and_the_two_are_independent(kernel):
    key = 99
    z1 = (factors(kernel, N, 1.0, 0.0, key) - 1).double()  # the cosine half of each Box-Muller pair
    z2 = (factors(kernel, N, 0.0, 1.0, key) - 1).double()  # the sine half, from the same counters
    reference = torch.randn(N)
    for z in (z1, z2):
        assert ks_distance(z.float(), reference) < 0.0045
    assert abs(torch.corrcoef(torch.stack([z1, z2]))[0, 1].item()) < 0.005
    assert abs(torch.corrcoef(torch.stack([z1**2, z2**2]))[0, 1].item()) < 0.005  # not just uncorrelated


def test_factors_depend_on_key_and_position_only(kernel):
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = factors(kernel, 300_001, 0.3, 0.2, key=5)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(factors(kernel, 300_001, 0.3, 0.2, key=5), serial)
    assert torch.equal(factors(kernel, 1000, 0.3, 0.2, key=5), serial[:1000])  # a prefix of the same stream
    assert not torch.equal(factors(kernel, 1000, 0.3, 0.2, key=6), serial[:1000])


def test_accumulate_multiplies_into_the_buffer(kernel):
    out = factors(kernel, 10_000, 0.2, 0.1, key=1)
    expected = out * factors(kernel, 10_000, 0.3, 0.0, key=2)
    kernel.noise_factor(out.numpy(), 0.3, 0.0, 2, True)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


@pytest.mark.parametrize("p", [0.5, 0.2, 1 / 3])
def test_keep_mask_thresholds_the_24_bit_uniforms_of_both_words(kernel, probes, p):
    n = 2 * 100 + 1  # an odd count: the last counter's second word is not used
    uniforms = (words(probes, 101, 0, 42) >> 8).double() / 2**24  # float32 uniform_()'s 24-bit values
    expected = (uniforms[:n] >= p).float() / (1 - p)
    mask = torch.empty(n)
    kernel.keep_mask(mask.numpy(), p, 42)
    torch.testing.assert_close(mask, expected, rtol=0, atol=0)


def test_the_kernels_check_what_they_are_given(kernel):
    """Memory safety rests on the C++ side: wrong dtypes, layouts and sizes are refused before any access."""
    with pytest.raises(TypeError):
        kernel.noise_factor(torch.empty(8, dtype=torch.float64).numpy(), 0.1, 0.1, 1, False)
    with pytest.raises(TypeError):
        kernel.noise_factor(torch.empty(4, 4).t().numpy(), 0.1, 0.1, 1, False)  # not C-contiguous: no silent copy
    with pytest.raises(ValueError, match="rate"):
        kernel.keep_mask(torch.empty(8).numpy(), 1.0, 1)
    rows = torch.randn(3, 2 * 4 * 6)
    with pytest.raises(ValueError, match="outer \\* channels \\* inner"):
        kernel.channel_sums(rows.numpy(), rows.numpy(), 2, 4, 4)
    with pytest.raises(ValueError, match="shape of x"):
        kernel.channel_sums(rows.numpy(), torch.randn(2, 48).numpy(), 2, 4, 6)
    with pytest.raises(ValueError, match=r"\(2, C, 2\) coefficients"):
        kernel.channel_affine(torch.empty_like(rows).numpy(), rows.numpy(), None, torch.randn(3, 4, 2).numpy(), 2, 4, 6)
    with pytest.raises(ValueError, match="float32 CPU tensors"):
        _native.noise_factor(torch.empty(4, dtype=torch.float64), (0.1,))


def test_multiplicative_noise_draws_one_key_per_pair_of_sigmas(kernel):
    x = torch.randn(3, 4, 5, 3, dtype=torch.complex64)
    sigmas = (0.125, 0.25, 0.1)
    torch.manual_seed(8)
    keys = [int(torch.empty((), dtype=torch.int64).random_()) for _ in range(2)]
    n = 2 * x.numel()
    factor = factors(kernel, n, 0.125, 0.25, keys[0]) * factors(kernel, n, 0.1, 0.0, keys[1])
    torch.manual_seed(8)
    out = SF.multiplicative_noise(x, sigmas, kernels=SF.NATIVE)
    torch.testing.assert_close(torch.view_as_real(out), torch.view_as_real(x) * factor.view(3, 4, 5, 3, 2),
                               rtol=0, atol=0)
    assert not torch.equal(SF.multiplicative_noise(x, sigmas, kernels=SF.NATIVE), out)  # fresh keys on every call


def test_multiplicative_noise_gradient_is_the_factor(kernel):
    x = torch.randn(2, 3, 4, 4, dtype=torch.complex64, requires_grad=True)
    out = SF.multiplicative_noise(x, (0.2, 0.3), kernels=SF.NATIVE)
    factor = torch.view_as_real(out).detach() / torch.view_as_real(x).detach()
    torch.view_as_real(out).sum().backward()
    torch.testing.assert_close(torch.view_as_real(x.grad), factor)


def test_noise_factor_takes_torchs_generator_off_float32(kernel):
    like = torch.empty(2, 3, 8, 5, 2, dtype=torch.float64)
    torch.manual_seed(4)
    drawn = SF.noise_factor(like, (0.2, 0.3), kernels=SF.NATIVE)
    torch.manual_seed(4)
    expected = SF.normal_like(like, 1.0, 0.2) * SF.normal_like(like, 1.0, 0.3)
    torch.testing.assert_close(drawn, expected, rtol=0, atol=0)


def test_kernel_setting_from_the_environment_and_invalid_values(monkeypatch):
    for value, setting in (("native", "native"), ("torch", "torch"), ("auto", "auto"), ("", "auto")):
        monkeypatch.setenv(runtime.KERNELS_ENV, value)
        assert runtime.kernel_setting() == setting
    monkeypatch.setenv(runtime.KERNELS_ENV, "fast")
    with pytest.raises(ValueError, match="CEMNET_KERNELS must be one of"):
        runtime.kernel_setting()
    with runtime.using_kernels("torch"):  # a set value wins over the environment, inside the block only
        assert runtime.kernel_setting() == "torch"
    with pytest.raises(ValueError, match="kernels must be one of"):
        runtime.set_kernels("fast")


def test_layers_choose_their_kernels_when_built_and_moved():
    with runtime.using_kernels("torch"):
        layer = cnn.SpectralBatchNorm2d(3)
    assert layer.kernels is SF.TORCH_CPU  # the setting at construction decides
    with runtime.using_kernels("native"):
        assert layer.kernels is SF.TORCH_CPU  # not re-decided per call
        layer.float()  # a move decides again
        assert layer.kernels is SF.NATIVE
        noise = cnn.SpectralDropout().to("meta")  # no parameters: still knows where it went
        assert noise.device.type == "meta" and noise.kernels is SF.TORCH


def test_failed_build_warns_once_and_falls_back_unless_required(monkeypatch, capsys):
    def broken():
        raise _native.NativeBuildError("no compiler")

    monkeypatch.setattr(_native, "kernels", broken)
    monkeypatch.setattr(runtime, "_native_failure", None)
    with runtime.using_kernels("auto"):
        assert runtime.native_kernels() is None and runtime.native_kernels() is None
        assert capsys.readouterr().err.count("could not be built (no compiler)") == 1
        assert runtime.kernels_in_use(torch.device("cpu")) == "torch"
        x = torch.randn(2, 3, 4, 4, dtype=torch.complex64)
        torch.manual_seed(1)
        expected = torch.view_as_real(x) * SF.normal_like(torch.view_as_real(x), 1.0, 0.2)
        torch.manual_seed(1)
        out = SF.multiplicative_noise(x, 0.2, kernels=SF.NATIVE)  # falls back to PyTorch's generator
        torch.testing.assert_close(torch.view_as_real(out), expected, rtol=0, atol=0)
    monkeypatch.setattr(runtime, "_native_failure", None)
    with runtime.using_kernels("native"), pytest.raises(_native.NativeBuildError, match="CEMNET_KERNELS=native"):
        runtime.native_kernels()
    with runtime.using_kernels("torch"):
        assert runtime.native_kernels() is None and capsys.readouterr().err == ""  # off: no build, no warning


def test_loading_the_kernel_keeps_denormals(kernel):
    # Linking a shared library with -ffast-math would flush denormals to zero in the whole process.
    tiny = torch.tensor([1e-39])
    assert (tiny * 1.0).item() > 0


def test_cold_build_goes_to_torch_extensions_dir_without_locks(kernel, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    killed = tmp_path / ".build-cemnet_kernels_0-2147483646-abc"  # what a killed build left (its process is gone)
    killed.mkdir()
    stale = tmp_path / f".build-cemnet_kernels_0-{os.getpid()}-def"  # a live process's, but older than any build
    stale.mkdir()
    old = time.time() - _native.BUILD_TIMEOUT_S - 60
    os.utime(stale, (old, old))
    built = _native.load_extension([_native.KERNELS_SOURCE], "cemnet_kernels")  # a cold build, as on a fresh machine
    assert "compiling the native CPU kernels" in capsys.readouterr().err
    assert [path.name for path in tmp_path.iterdir()] == [f"{built.__name__}.so"]  # no lock, no build folders
    assert factors(built, 5, 0.1, 0.2, key=3).tolist() == factors(kernel, 5, 0.1, 0.2, key=3).tolist()
    _native.load_extension([_native.KERNELS_SOURCE], "cemnet_kernels")  # built already: loaded without a word
    assert capsys.readouterr().err == ""


def test_a_failed_compilation_says_why_in_one_line(tmp_path, monkeypatch):
    native_kernels_or_skip()
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "cache"))
    broken = tmp_path / "broken.cpp"
    broken.write_text("this is not C++;\n")
    with pytest.raises(_native.NativeBuildError, match="error") as raised:
        _native.load_extension([broken], "cemnet_broken")
    assert "\n" not in str(raised.value)
    assert [path.name for path in (tmp_path / "cache").iterdir()] == []  # nothing left behind


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """The same complex (B, C, H, W) values with channels innermost in memory."""
    return torch.view_as_complex(torch.view_as_real(x).permute(0, 2, 3, 1, 4).contiguous()).permute(0, 3, 1, 2)


@pytest.mark.parametrize("shape", [(6, 4, 7, 4), (3, 5, 5, 3)])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("offset", [0.3, 40.0])  # the one-pass statistics, then the centred two-pass ones
def test_batch_norm_equals_pytorchs_operations(kernel, shape, layout, offset):
    x = torch.randn(shape, dtype=torch.complex64) * 2 + offset * (1 - 0.5j)
    x = (_channels_last(x) if layout == "channels_last" else x).requires_grad_()
    weight, bias = torch.randn(shape[1], 2, requires_grad=True), torch.randn(shape[1], 2, requires_grad=True)
    grad = torch.randn(shape, dtype=torch.complex64)
    results = []
    for kernels in (SF.NATIVE, SF.TORCH_CPU):
        out, mean, var = SF.spectral_batch_norm_with_stats(x, weight, bias, kernels=kernels)
        results.append((out, mean, var, *torch.autograd.grad(out, (x, weight, bias), grad)))
    for native_value, torch_value in zip(*results):
        scale = torch_value.abs().max().item()
        torch.testing.assert_close(native_value, torch_value, rtol=0, atol=2e-5 * max(scale, 1.0))
    assert results[0][0].stride() == x.stride()  # the output keeps the input's layout


def test_batch_norm_layer_uses_the_kernel_and_updates_running_statistics(kernel, monkeypatch):
    calls = []
    for name in ("channel_sums", "channel_affine"):
        original = getattr(_native, name)
        monkeypatch.setattr(_native, name, lambda *a, original=original, name=name, **k: calls.append(name) or
                            original(*a, **k))
    with runtime.using_kernels("native"):
        layer = cnn.SpectralBatchNorm2d(3).train()
    x = torch.randn(4, 3, 5, 5, dtype=torch.complex64) + 2.0
    layer(x.requires_grad_()).real.sum().backward()
    assert calls.count("channel_sums") == 2 and calls.count("channel_affine") == 2  # forward and backward
    parts = torch.view_as_real(x.detach())
    expected_mean = 0.1 * parts.mean(dim=(0, 2, 3))  # momentum 0.1 from zeros, per channel and part
    torch.testing.assert_close(torch.stack([layer.real.running_mean, layer.imag.running_mean], 1), expected_mean)


def test_eval_batch_norm_uses_the_kernel_only_without_autograd(kernel, monkeypatch):
    layers = []
    for setting in ("native", "torch"):
        with runtime.using_kernels(setting):
            layers.append(cnn.SpectralBatchNorm2d(4))
    with torch.no_grad():
        for module in (layers[0].real, layers[0].imag):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.weight.uniform_(0.5, 2)
            module.bias.uniform_(-1, 1)
    layers[1].load_state_dict(layers[0].state_dict())
    x = _channels_last(torch.randn(3, 4, 6, 4, dtype=torch.complex64))
    with torch.no_grad():
        outputs = [layer.eval()(x) for layer in layers]
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-6, atol=1e-6)
    monkeypatch.setattr(_native, "channel_affine", None)  # would fail if called
    out = layers[0](x)  # gradients asked for (the weights): PyTorch's operations, which autograd follows
    out.real.sum().backward()
    assert layers[0].real.weight.grad is not None and layers[0].real.weight.grad.abs().sum() > 0
