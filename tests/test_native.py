"""The native CPU noise kernel (cemnet.native): its generator, its law, and how the noise layers use it."""

import os
import time
import warnings

import pytest
import torch

from cemnet import native
from cemnet import nn as cnn
from cemnet.nn import functional as SF

N = 1_000_000


@pytest.fixture(scope="module")
def kernel():
    module = native.kernels()
    if module is None:
        pytest.skip(f"the native kernels are off or could not be built ({native.NATIVE_ENV}, compiler, ninja)")
    return module


def factors(kernel, n: int, a: float, b: float, key: int) -> torch.Tensor:
    out = torch.empty(n)
    kernel.noise_factor(out.data_ptr(), n, a, b, key, False)
    return out


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
def test_threefry_known_answers(kernel, first, key, expected):
    words = torch.empty(2, dtype=torch.int32)
    kernel.threefry_words(words.data_ptr(), 1, first, key)
    assert tuple(int(word) & 0xFFFFFFFF for word in words) == expected


def test_threefry_blocks_count_on_from_their_first_counter(kernel):
    # 130 counters span three blocks of 64 (the last one partial); each word pair is the counter's own.
    many = torch.empty(2 * 130, dtype=torch.int32)
    kernel.threefry_words(many.data_ptr(), 130, 1000, 7)
    one = torch.empty(2, dtype=torch.int32)
    for index in (0, 63, 64, 129):
        kernel.threefry_words(one.data_ptr(), 1, 1000 + index, 7)
        assert torch.equal(many[2 * index:2 * index + 2], one)


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


def test_kernel_runs_on_pytorchs_threads(kernel):
    if torch.get_num_threads() < 2:
        pytest.skip("one intra-op thread")
    assert kernel.parallel_threads() == torch.get_num_threads()


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
    kernel.noise_factor(out.data_ptr(), out.numel(), 0.3, 0.0, 2, True)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


@pytest.mark.parametrize("p", [0.5, 0.2, 1 / 3])
def test_keep_mask_thresholds_the_24_bit_uniforms_of_both_words(kernel, p):
    n = 2 * 100 + 1  # an odd count: the last counter's second word is not used
    packed = torch.empty(2 * 101, dtype=torch.int32)
    kernel.threefry_words(packed.data_ptr(), 101, 0, 42)
    words = packed.to(torch.int64) & 0xFFFFFFFF
    uniforms = (words >> 8).double() / 2**24  # float32 uniform_()'s 24-bit values
    expected = (uniforms[:n] >= p).float() / (1 - p)
    mask = torch.empty(n)
    kernel.keep_mask(mask.data_ptr(), n, p, 42)
    torch.testing.assert_close(mask, expected, rtol=0, atol=0)


def test_multiplicative_noise_draws_one_key_per_pair_of_sigmas(kernel):
    x = torch.randn(3, 4, 5, 3, dtype=torch.complex64)
    sigmas = (0.125, 0.25, 0.1)
    torch.manual_seed(8)
    keys = [int(torch.empty((), dtype=torch.int64).random_()) for _ in range(2)]
    n = 2 * x.numel()
    factor = factors(kernel, n, 0.125, 0.25, keys[0]) * factors(kernel, n, 0.1, 0.0, keys[1])
    torch.manual_seed(8)
    out = SF.multiplicative_noise(x, sigmas)
    torch.testing.assert_close(torch.view_as_real(out), torch.view_as_real(x) * factor.view(3, 4, 5, 3, 2),
                               rtol=0, atol=0)
    assert not torch.equal(SF.multiplicative_noise(x, sigmas), out)  # fresh keys on every call


def test_multiplicative_noise_gradient_is_the_factor(kernel):
    x = torch.randn(2, 3, 4, 4, dtype=torch.complex64, requires_grad=True)
    out = SF.multiplicative_noise(x, (0.2, 0.3))
    factor = torch.view_as_real(out).detach() / torch.view_as_real(x).detach()
    torch.view_as_real(out).sum().backward()
    torch.testing.assert_close(torch.view_as_real(x.grad), factor)


def test_noise_factor_falls_back_to_torchs_generator_off_float32(kernel):
    like = torch.empty(2, 3, 8, 5, 2, dtype=torch.float64)
    torch.manual_seed(4)
    drawn = SF.noise_factor(like, (0.2, 0.3))
    torch.manual_seed(4)
    expected = SF.normal_like(like, 1.0, 0.2) * SF.normal_like(like, 1.0, 0.3)
    torch.testing.assert_close(drawn, expected, rtol=0, atol=0)


def test_native_setting_off_require_and_invalid(monkeypatch):
    for value, setting in (("0", "off"), ("1", "require"), ("auto", "auto"), ("", "auto")):
        monkeypatch.setenv(native.NATIVE_ENV, value)
        assert native.native_setting() == setting
    monkeypatch.setenv(native.NATIVE_ENV, "fast")
    with pytest.raises(ValueError, match="CEMNET_NATIVE"):
        native.native_setting()


def test_failed_build_warns_and_falls_back_unless_required(monkeypatch):
    def broken_build():
        raise RuntimeError("no compiler\nlong compiler output")

    monkeypatch.setattr(native, "_build", broken_build)
    try:
        native.kernels.cache_clear()
        monkeypatch.setenv(native.NATIVE_ENV, "auto")
        with pytest.warns(RuntimeWarning, match="could not be built .*no compiler"):
            assert native.kernels() is None
        native.kernels.cache_clear()
        monkeypatch.setenv(native.NATIVE_ENV, "1")
        with pytest.raises(RuntimeError, match="CEMNET_NATIVE=1"):
            native.kernels()
        native.kernels.cache_clear()
        monkeypatch.setenv(native.NATIVE_ENV, "0")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert native.kernels() is None  # off: no build, no warning
        x = torch.randn(2, 3, 4, 4, dtype=torch.complex64)
        torch.manual_seed(1)
        expected = torch.view_as_real(x) * SF.normal_like(torch.view_as_real(x), 1.0, 0.2)
        torch.manual_seed(1)
        torch.testing.assert_close(torch.view_as_real(SF.multiplicative_noise(x, 0.2)), expected, rtol=0, atol=0)
    finally:
        native.kernels.cache_clear()  # the next caller builds (or loads) the real kernel again


def test_loading_the_kernel_keeps_denormals(kernel):
    # Linking a shared library with -ffast-math would flush denormals to zero in the whole process.
    tiny = torch.tensor([1e-39])
    assert (tiny * 1.0).item() > 0


def test_build_goes_to_torch_extensions_dir_and_says_so(kernel, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    built = native._build()  # a cold build, as on a fresh machine (about 10 s)
    assert "compiling the native CPU kernels" in capsys.readouterr().err
    (directory,) = tmp_path.iterdir()
    assert built.__name__.startswith(directory.name) and any(directory.glob(f"{built.__name__}.*"))
    assert factors(built, 5, 0.1, 0.2, key=3).tolist() == factors(kernel, 5, 0.1, 0.2, key=3).tolist()
    native._build()  # built already: loaded without a word
    assert capsys.readouterr().err == ""
    lock = directory / "lock"  # what a killed build leaves; PyTorch would wait for it forever
    lock.touch()
    old = time.time() - native.STALE_LOCK_S - 60
    os.utime(lock, (old, old))
    with pytest.warns(RuntimeWarning, match="removing the build lock"):
        native._build()
    assert not lock.exists()


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """The same complex (B, C, H, W) values with channels innermost in memory."""
    return torch.view_as_complex(torch.view_as_real(x).permute(0, 2, 3, 1, 4).contiguous()).permute(0, 3, 1, 2)


@pytest.mark.parametrize("shape", [(6, 4, 7, 4), (3, 5, 5, 3)])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("offset", [0.3, 40.0])  # the one-pass statistics, then the centred two-pass ones
def test_batch_norm_equals_pytorchs_operations(kernel, monkeypatch, shape, layout, offset):
    x = torch.randn(shape, dtype=torch.complex64) * 2 + offset * (1 - 0.5j)
    x = (_channels_last(x) if layout == "channels_last" else x).requires_grad_()
    weight, bias = torch.randn(shape[1], 2, requires_grad=True), torch.randn(shape[1], 2, requires_grad=True)
    grad = torch.randn(shape, dtype=torch.complex64)
    results = []
    for kernels in (kernel, None):
        monkeypatch.setattr(native, "kernels", lambda kernels=kernels: kernels)
        out, mean, var = SF.spectral_batch_norm_with_stats(x, weight, bias)
        results.append((out, mean, var, *torch.autograd.grad(out, (x, weight, bias), grad)))
    for native_value, torch_value in zip(*results):
        scale = torch_value.abs().max().item()
        torch.testing.assert_close(native_value, torch_value, rtol=0, atol=2e-5 * max(scale, 1.0))
    assert results[0][0].stride() == x.stride()  # the output keeps the input's layout


def test_batch_norm_layer_uses_the_kernel_and_updates_running_statistics(kernel, monkeypatch):
    calls = []

    class Counting:
        def __getattr__(self, name):
            calls.append(name)
            return getattr(kernel, name)

    monkeypatch.setattr(native, "kernels", lambda: Counting())
    layer = cnn.SpectralBatchNorm2d(3).train()
    x = torch.randn(4, 3, 5, 5, dtype=torch.complex64) + 2.0
    layer(x.requires_grad_()).real.sum().backward()
    assert calls.count("channel_sums") == 2 and calls.count("channel_affine") == 2  # forward and backward
    parts = torch.view_as_real(x.detach())
    expected_mean = 0.1 * parts.mean(dim=(0, 2, 3))  # momentum 0.1 from zeros, per channel and part
    torch.testing.assert_close(torch.stack([layer.real.running_mean, layer.imag.running_mean], 1), expected_mean)


def test_eval_batch_norm_uses_the_kernel_only_without_autograd(kernel, monkeypatch):
    layer = cnn.SpectralBatchNorm2d(4)
    with torch.no_grad():
        for module in (layer.real, layer.imag):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.weight.uniform_(0.5, 2)
            module.bias.uniform_(-1, 1)
    layer.eval()
    x = _channels_last(torch.randn(3, 4, 6, 4, dtype=torch.complex64))
    outputs = []
    for kernels in (kernel, None):
        monkeypatch.setattr(native, "kernels", lambda kernels=kernels: kernels)
        with torch.no_grad():
            outputs.append(layer(x))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-6, atol=1e-6)
    monkeypatch.setattr(native, "kernels", lambda: kernel)
    out = layer(x)  # gradients asked for (the weights): PyTorch's operations, which autograd follows
    out.real.sum().backward()
    assert layer.real.weight.grad is not None and layer.real.weight.grad.abs().sum() > 0
