import gzip
import os

import pytest
import torch
from conftest import make_dataset_dir, write_idx

from tinymnist import data
from tinymnist.data import check, load_dataset, locate, normalize, read_idx, read_split, split_validation
from tinymnist.errors import TinyMnistError


@pytest.mark.parametrize("compress", [True, False])
def test_idx_round_trip(tmp_path, compress):
    images = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)
    path = write_idx(tmp_path / "x-idx3-ubyte", images, compress)
    assert torch.equal(read_idx(path), images)


def test_wrong_magic(tmp_path):
    path = tmp_path / "bad.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x0d\x03" + b"\x00" * 20))
    with pytest.raises(TinyMnistError, match="bad.gz: wrong magic"):
        read_idx(path)


def test_truncated_gzip(tmp_path):
    path = write_idx(tmp_path / "t.gz", torch.zeros(10, 28, 28, dtype=torch.uint8))
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(TinyMnistError, match="t.gz: corrupt or truncated gzip"):
        read_idx(path)


def test_truncated_body(tmp_path):
    path = write_idx(tmp_path / "t", torch.zeros(10, 28, 28, dtype=torch.uint8), compress=False)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(TinyMnistError, match="truncated or corrupt"):
        read_idx(path)


def test_images_where_labels_expected(tmp_path):
    d = make_dataset_dir(tmp_path / "d")
    (d / "train-labels-idx1-ubyte.gz").write_bytes((d / "train-images-idx3-ubyte.gz").read_bytes())
    with pytest.raises(TinyMnistError, match="train-labels.*expected labels"):
        read_split(d, "train")


def test_label_count_mismatch(tmp_path):
    d = make_dataset_dir(tmp_path / "d")
    write_idx(d / "train-labels-idx1-ubyte.gz", torch.zeros(63, dtype=torch.uint8))
    with pytest.raises(TinyMnistError, match="63 labels but train-images.* has 64 images"):
        read_split(d, "train")


def test_label_out_of_range(tmp_path):
    d = make_dataset_dir(tmp_path / "d")
    labels = torch.zeros(64, dtype=torch.uint8)
    labels[7] = 12
    write_idx(d / "train-labels-idx1-ubyte.gz", labels)
    with pytest.raises(TinyMnistError, match="label 12 at index 7 is outside 0-9"):
        read_split(d, "train")


def test_missing_file(tmp_path):
    d = make_dataset_dir(tmp_path / "d")
    (d / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(TinyMnistError, match="t10k-images-idx3-ubyte.gz: file not found"):
        read_split(d, "test")


def test_raw_files_are_found(tmp_path):
    d = make_dataset_dir(tmp_path / "d", compress=False)
    split = read_split(d, "train")
    assert split.images.shape == (64, 28, 28) and split.labels.dtype == torch.int64


def test_search_order_prefers_data_dir_then_env(tmp_path, monkeypatch):
    a, b = make_dataset_dir(tmp_path / "a"), make_dataset_dir(tmp_path / "b")
    monkeypatch.setenv("TINYMNIST_DATA", str(b))
    assert locate("mnist", a)[0] == a
    found, source = locate("mnist")
    assert found == b and "TINYMNIST_DATA" in source


def test_env_var_may_name_a_parent_folder(tmp_path, monkeypatch):
    make_dataset_dir(tmp_path / "all" / "mnist")
    monkeypatch.setenv("TINYMNIST_DATA", str(tmp_path / "all"))
    assert locate("mnist")[0] == tmp_path / "all" / "mnist"


def test_env_var_pointing_nowhere_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYMNIST_DATA", str(tmp_path / "typo"))
    with pytest.raises(TinyMnistError, match=r"\$TINYMNIST_DATA=.*typo: no such folder \(unset it"):
        locate("mnist")
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("TINYMNIST_DATA", str(tmp_path / "empty"))
    with pytest.raises(TinyMnistError, match=r"\$TINYMNIST_DATA=.*empty: no mnist IDX files"):
        locate("mnist")


def test_env_var_parent_folder_with_an_incomplete_copy_names_the_missing_files(tmp_path, monkeypatch):
    d = make_dataset_dir(tmp_path / "all" / "mnist")
    (d / "train-images-idx3-ubyte.gz").unlink()
    monkeypatch.setenv("TINYMNIST_DATA", str(tmp_path / "all"))
    with pytest.raises(TinyMnistError, match=r"all/mnist is missing train-images-idx3-ubyte\[.gz\]"):
        locate("mnist")


def test_env_var_pointing_at_an_incomplete_copy_names_the_missing_files(tmp_path, monkeypatch):
    d = make_dataset_dir(tmp_path / "part")
    (d / "t10k-labels-idx1-ubyte.gz").unlink()
    monkeypatch.setenv("TINYMNIST_DATA", str(d))
    expected = r"\$TINYMNIST_DATA=.*part: .*part is missing t10k-labels-idx1-ubyte\[.gz\] \(unset it"
    with pytest.raises(TinyMnistError, match=expected):
        locate("mnist")


def test_bad_data_dir_is_an_error(tmp_path):
    with pytest.raises(TinyMnistError, match="--data-dir .*no such folder"):
        locate("mnist", tmp_path / "nowhere")
    make_dataset_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(TinyMnistError, match=r"--data-dir .*: missing t10k-labels-idx1-ubyte\[\.gz\](?!,)"):
        locate("mnist", tmp_path)


def test_nothing_found_lists_every_place_and_fails_fast(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TINYMNIST_DATA", raising=False)
    monkeypatch.setitem(data.SYSTEM_DIRS, "mnist", [str(tmp_path / "nowhere")])
    calls = []

    def no_network(url, timeout):
        calls.append((url, timeout))
        raise OSError("network unreachable")

    monkeypatch.setattr(data.urllib.request, "urlopen", no_network)
    with pytest.raises(TinyMnistError) as e:
        locate("mnist")
    message = str(e.value)
    assert "./data" in message and "nowhere" in message and "download" in message
    assert calls and all(t <= data.DOWNLOAD_TIMEOUT_S for _, t in calls)


def test_validation_split_is_fixed_and_disjoint(tmp_path):
    split = read_split(make_dataset_dir(tmp_path / "d", n_train=50), "train")
    train1, val1 = split_validation(split, 10)
    train2, val2 = split_validation(split, 10)
    assert len(train1) == 40 and len(val1) == 10
    assert torch.equal(val1.images, val2.images)
    with pytest.raises(TinyMnistError, match="--val-split"):
        split_validation(split, 50)


def test_normalize_shape_and_scale():
    x = normalize(torch.full((3, 28, 28), 255, dtype=torch.uint8))
    assert x.shape == (3, 1, 28, 28) and x.dtype == torch.float32
    assert torch.allclose(x, torch.full_like(x, (1 - 0.1307) / 0.3081))


# ---------------------------------------------------------------------------------------------- real data
def test_real_mnist_loads(mnist_dir):
    ds = load_dataset("mnist", mnist_dir)
    assert ds.train.images.shape == (60000, 28, 28) and ds.test.images.shape == (10000, 28, 28)
    assert ds.train.labels.bincount().tolist()[1] == 6742  # the known count of 1s in MNIST's training set
    assert ds.test.labels.bincount().min() > 800


def test_real_mnist_checksums(mnist_dir):
    rows = {os.path.basename(r["file"]): r for r in check("mnist", mnist_dir)}
    assert rows["t10k-images-idx3-ubyte.gz"]["official"] is True
    assert rows["train-labels-idx1-ubyte.gz"]["official"] is True
    # The offline copy's training images are rebuilt, not the official bytes: reported, not fatal.
    assert rows["train-images-idx3-ubyte.gz"]["official"] is False


def test_fashion_mnist_from_debian_package():
    directory = "/usr/share/datasets/fashion-mnist"
    if not os.path.isdir(directory):
        if os.environ.get("CI"):
            pytest.fail(f"{directory} missing: .ci/run should install dataset-fashion-mnist")
        pytest.skip("dataset-fashion-mnist not installed (apt-get install dataset-fashion-mnist)")
    ds = load_dataset("fashion-mnist")
    assert len(ds.train) == 60000 and len(ds.test) == 10000
    assert "fashion-mnist" in ds.source
    # Debian recompresses the files, so only the uncompressed labels tell them from MNIST's: named as MNIST,
    # they are refused (the second fresh-user trial trained Fashion-MNIST as digits this way).
    with pytest.raises(TinyMnistError, match="this is fashion-mnist's file, not mnist's"):
        load_dataset("mnist", directory)


@pytest.mark.parametrize("compress", [True, False])
def test_mnist_labels_named_as_fashion_mnist_are_refused_compressed_or_not(tmp_path, mnist_dir, compress):
    d = make_dataset_dir(tmp_path / "d", n_test=10_000, compress=compress)  # as many images as the real labels
    suffix = ".gz" if compress else ""
    # MNIST's official test labels, recompressed here (other .gz bytes) or not compressed at all
    full = gzip.decompress((mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (d / f"t10k-labels-idx1-ubyte{suffix}").write_bytes(gzip.compress(full) if compress else full)
    with pytest.raises(TinyMnistError, match="t10k-labels-idx1-ubyte.*this is mnist's file, not fashion-mnist's"):
        load_dataset("fashion-mnist", d)
