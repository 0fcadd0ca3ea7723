import torch

from tinymnist.augment import random_affine


def _digits(n=16):
    x = torch.zeros(n, 1, 28, 28)
    x[:, :, 8:20, 12:16] = 1.0  # a vertical bar: rotation and shifts move it visibly
    return x


def test_shape_dtype_and_identity_at_zero():
    x = _digits()
    out = random_affine(x, 15, 0.1)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert random_affine(x, 0, 0) is x  # strength 0 is exactly "off"


def test_each_sample_gets_its_own_transform():
    torch.manual_seed(0)
    out = random_affine(_digits(8), 20, 0.15)
    diffs = [(out[0] - out[i]).abs().sum().item() for i in range(1, 8)]
    assert min(diffs) > 1.0


def test_order_preserved_so_labels_stay_matched():
    # Distinct images, a gentle transform: each output must still look most like its own input.
    torch.manual_seed(1)
    x = torch.rand(10, 1, 28, 28)
    out = random_affine(x, 3, 0.02)
    dist = torch.cdist(out.flatten(1), x.flatten(1))
    assert torch.equal(dist.argmin(1), torch.arange(10))


def test_background_fill_is_preserved():
    fill = -0.4242
    x = torch.full((4, 1, 28, 28), fill)
    out = random_affine(x, 30, 0.2, fill=fill)
    assert torch.allclose(out, x, atol=1e-5)


def test_seeded_generator_is_reproducible():
    x = _digits(4)
    a = random_affine(x, 10, 0.1, generator=torch.Generator().manual_seed(3))
    b = random_affine(x, 10, 0.1, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
