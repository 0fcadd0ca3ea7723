"""Data: IDX files on disk -> uint8 tensors in memory.

MNIST and Fashion-MNIST ship as four IDX files (optionally gzip-compressed). We read them with a small reader
of our own, validate everything a corrupt or mismatched file could get wrong, and return whole splits as
tensors: 60,000 x 28 x 28 bytes is 47 MB, so the dataset lives in memory and batches are slices of it.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import TinyMnistError

SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# md5 of the official .gz files, as published with each release.
OFFICIAL_MD5 = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}

# sha256 of the *uncompressed* label files: the same whatever the compression (Debian recompresses Fashion-MNIST,
# so its .gz checksums differ from the official ones). MNIST's are the official files; Fashion-MNIST's are those
# of Debian's dataset-fashion-mnist package. Labels alone tell the two datasets apart.
LABEL_SHA256 = {
    "mnist": {"65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
              "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"},
    "fashion-mnist": {"bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                      "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"},
}

MIRRORS = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://yann.lecun.com/exdb/mnist/",
    ],
    "fashion-mnist": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
}

# Where a package manager or the project's shared folder keeps a read-only copy.
SYSTEM_DIRS = {
    "mnist": ["../shared/data/mnist"],
    "fashion-mnist": ["/usr/share/datasets/fashion-mnist"],
}

# Per-dataset pixel mean/std (of the training images, scaled to [0, 1]); fixed so that a saved model and
# `predict` normalise exactly as training did.
NORMALIZATION = {"mnist": (0.1307, 0.3081), "fashion-mnist": (0.2860, 0.3530)}

CLASS_NAMES = {
    "mnist": [str(i) for i in range(10)],
    "fashion-mnist": [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ],
}

DATASETS = tuple(OFFICIAL_MD5)
_IDX_DTYPE_UBYTE = 0x08
DOWNLOAD_TIMEOUT_S = 5.0


@dataclass
class Split:
    """One split held in memory: images [N, 28, 28] uint8 and labels [N] int64."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Dataset:
    name: str
    train: Split
    test: Split
    directory: Path
    source: str  # which step of the search order found it
    sha256: dict[str, str] = field(default_factory=dict)  # of each file as stored (compressed or not)
    content_sha256: dict[str, str] = field(default_factory=dict)  # of what it holds: see split_checksums


def differing_data(recorded: dict, now: dict, prefix: str = "") -> list[str]:
    """Which of a run's recorded data checksums (config.json's "data") differ from `now` (same form), among keys
    starting with `prefix` ("t10k" for the test files only). Content checksums decide where the run has them;
    runs saved before they existed are compared by file checksum, file by file."""
    for field_name in ("content_sha256", "sha256"):
        old, new = recorded.get(field_name) or {}, now.get(field_name) or {}
        common = [k for k in old if k in new and k.startswith(prefix)]
        if common:
            return [k for k in common if old[k] != new[k]]
    return []


def split_checksums(directory: Path, name: str, split: Split, dataset: str, fix: str = "") -> dict[str, dict]:
    """The checksums a run records for one split ("train" or "test") read from `directory`, after refusing the
    other dataset's files (`fix`: the hint for that error): {"sha256": of each file as stored,
    "content_sha256": of the images and labels as read}. The content checksums are the same whether the files are
    gzipped, recompressed or plain; keys "train-images", "t10k-labels", ..."""
    files = {}
    for stem in SPLIT_FILES[name]:
        p = _find_file(directory, stem)
        payload = p.read_bytes()
        _refuse_other_dataset(p, payload, dataset, fix)
        files[p.name] = hashlib.sha256(payload).hexdigest()
    prefix = SPLIT_FILES[name][0].split("-")[0]  # "train" or "t10k", as the files are named
    content = {f"{prefix}-images": hashlib.sha256(split.images.numpy().tobytes()).hexdigest(),
               f"{prefix}-labels": hashlib.sha256(split.labels.numpy().tobytes()).hexdigest()}
    return {"sha256": files, "content_sha256": content}


# --------------------------------------------------------------------------------------------------- IDX reader
def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise TinyMnistError(f"{path}: file not found")
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":  # gzip magic: decompress whatever the file is called
            return gzip.decompress(raw)
        return raw
    except (OSError, EOFError, zlib.error) as e:
        raise TinyMnistError(f"{path}: corrupt or truncated gzip data ({e})") from None


def read_idx(path: str | Path, expected_ndim: int | None = None) -> torch.Tensor:
    """Read one IDX file (raw or gzip) of unsigned bytes into a uint8 tensor, validating the header."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise TinyMnistError(f"{path}: too short to be an IDX file ({len(data)} bytes)")
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != _IDX_DTYPE_UBYTE or ndim not in (1, 3):
        raise TinyMnistError(f"{path}: wrong magic number 0x{data[:4].hex()} (not an MNIST-style IDX file)")
    if expected_ndim is not None and ndim != expected_ndim:
        kind = "labels (1-D)" if expected_ndim == 1 else "images (3-D)"
        raise TinyMnistError(f"{path}: expected {kind} but the header says {ndim} dimensions")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise TinyMnistError(f"{path}: truncated header")
    dims = struct.unpack(f">{ndim}I", data[4:header_len])
    if ndim == 3 and dims[1:] != (28, 28):
        raise TinyMnistError(f"{path}: images are {dims[1]}x{dims[2]}, expected 28x28")
    expected = 1
    for d in dims:
        expected *= d
    body = len(data) - header_len
    if body != expected:
        raise TinyMnistError(
            f"{path}: header promises {expected} bytes of data for shape {tuple(dims)}, file has {body} "
            "(truncated or corrupt)"
        )
    array = torch.frombuffer(bytearray(data[header_len:]), dtype=torch.uint8)
    return array.reshape(dims)


def _find_file(directory: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        if (directory / name).is_file():
            return directory / name
    raise TinyMnistError(f"{directory / (stem + '.gz')}: file not found")


def read_split(directory: str | Path, split: str) -> Split:
    """Read and cross-check one split (images + labels) from a directory."""
    directory = Path(directory)
    image_stem, label_stem = SPLIT_FILES[split]
    image_path, label_path = _find_file(directory, image_stem), _find_file(directory, label_stem)
    images = read_idx(image_path, expected_ndim=3)
    labels = read_idx(label_path, expected_ndim=1)
    if len(images) != len(labels):
        raise TinyMnistError(
            f"{label_path}: {len(labels)} labels but {image_path.name} has {len(images)} images"
        )
    if len(labels) and int(labels.max()) > 9:
        bad = int((labels > 9).nonzero()[0])
        raise TinyMnistError(f"{label_path}: label {int(labels[bad])} at index {bad} is outside 0-9")
    return Split(images=images, labels=labels.long())


# ------------------------------------------------------------------------------------------------- search order
def _package_root() -> Path:
    return Path(__file__).resolve().parents[2]  # src/tinymnist/data.py -> project root


def candidate_dirs(dataset: str, data_dir: str | Path | None = None) -> list[tuple[str, Path]]:
    """The places we look for a dataset, in order, each with a label saying which rule produced it."""
    if dataset not in DATASETS:
        raise TinyMnistError(f"unknown dataset '{dataset}' (choose from: {', '.join(DATASETS)})")
    places: list[tuple[str, Path]] = []
    if data_dir is not None:
        places.append(("--data-dir", Path(data_dir)))
    if os.environ.get("TINYMNIST_DATA"):
        env = Path(os.environ["TINYMNIST_DATA"])
        # Either the folder holding the four files, or a parent holding one folder per dataset.
        places.append(("$TINYMNIST_DATA", env / dataset if _has_files(env / dataset) else env))
    places.append(("./data", Path("data") / dataset))
    for d in SYSTEM_DIRS[dataset]:
        p = Path(d)
        places.append(("offline copy", p))
        if not p.is_absolute():  # also relative to the project checkout, so any working directory works
            places.append(("offline copy", (_package_root() / p).resolve()))
    return places


def _has_files(directory: Path) -> bool:
    stems = [s for pair in SPLIT_FILES.values() for s in pair]
    return all(any((directory / n).is_file() for n in (s, s + ".gz")) for s in stems)


def download(dataset: str, target: Path, timeout: float = DOWNLOAD_TIMEOUT_S) -> None:
    """Fetch the four files from the public mirrors into `target`, checking the official md5 of each."""
    target.mkdir(parents=True, exist_ok=True)
    for name, md5 in OFFICIAL_MD5[dataset].items():
        if (target / name).is_file():
            continue
        errors = []
        for mirror in MIRRORS[dataset]:
            try:
                with urllib.request.urlopen(mirror + name, timeout=timeout) as response:
                    payload = response.read()
            except Exception as e:  # noqa: BLE001 - any network failure means "try the next mirror"
                errors.append(f"{mirror}: {e}")
                continue
            if hashlib.md5(payload).hexdigest() != md5:
                errors.append(f"{mirror}{name}: md5 mismatch")
                continue
            tmp = target / (name + ".part")
            tmp.write_bytes(payload)
            tmp.replace(target / name)
            break
        else:
            raise OSError("; ".join(errors))


def locate(dataset: str = "mnist", data_dir: str | Path | None = None, allow_download: bool = True,
           named: str | None = None) -> tuple[Path, str]:
    """Return (directory, which rule found it). Raises with every place looked if nothing is found.
    `named` is how errors name data_dir (default: "--data-dir <it>"; a grid file names its own option)."""
    places = candidate_dirs(dataset, data_dir)
    if data_dir is not None and not _has_files(Path(data_dir)):
        # An explicit --data-dir that is wrong is a mistake to report, not to silently route around.
        named = named or f"--data-dir {data_dir}"
        if not Path(data_dir).is_dir():
            why = "is a file, not a folder" if Path(data_dir).exists() else "no such folder"
            raise TinyMnistError(f"{named}: {why}")
        missing = _missing_files(Path(data_dir))
        if len(missing) == 4:
            raise TinyMnistError(f"{named}: no {dataset} IDX files there (need {_file_list()})")
        raise TinyMnistError(f"{named}: missing {', '.join(missing)}")
    env = os.environ.get("TINYMNIST_DATA")
    if data_dir is None and env and not any(_has_files(d) for label, d in places if label == "$TINYMNIST_DATA"):
        # Same for the environment variable: a typo there must not silently fall through to another copy.
        if not Path(env).is_dir():
            why = "is a file, not a folder" if Path(env).exists() else "no such folder"
            raise TinyMnistError(f"$TINYMNIST_DATA={env}: {why} (unset it to use the default search)")
        for d in (Path(env), Path(env) / dataset):  # the folder itself, or a parent with one folder per dataset
            missing = _missing_files(d) if d.is_dir() else []
            if 0 < len(missing) < 4:  # some files there: say which are missing, as for --data-dir
                raise TinyMnistError(f"$TINYMNIST_DATA={env}: {d} is missing {', '.join(missing)} (unset it to "
                                     "use the default search)")
        raise TinyMnistError(f"$TINYMNIST_DATA={env}: no {dataset} IDX files there or in {Path(env) / dataset} "
                             f"(need {_file_list()}; unset it to use the default search)")
    for label, directory in places:
        if _has_files(directory):
            return directory, f"{label} ({directory})"
    target = Path("data") / dataset
    if allow_download:
        try:
            download(dataset, target)
            return target, f"downloaded ({target})"
        except OSError as e:
            looked = ", ".join(f"{label}: {p}" for label, p in places)
            raise TinyMnistError(
                f"{dataset} not found. Looked in {looked}; download into {target} failed ({str(e)[:200]})"
            ) from None
    looked = ", ".join(f"{label}: {p}" for label, p in places)
    raise TinyMnistError(f"{dataset} not found. Looked in {looked}")


def _missing_files(directory: Path) -> list[str]:
    return [s + "[.gz]" for pair in SPLIT_FILES.values() for s in pair
            if not any((directory / n).is_file() for n in (s, s + ".gz"))]


def _file_list() -> str:
    return ", ".join(s + "[.gz]" for pair in SPLIT_FILES.values() for s in pair)



def load_dataset(dataset: str = "mnist", data_dir: str | Path | None = None) -> Dataset:
    """Find, read and validate both splits of a dataset."""
    directory, source = locate(dataset, data_dir)
    train, test = read_split(directory, "train"), read_split(directory, "test")
    sums = [split_checksums(directory, "train", train, dataset), split_checksums(directory, "test", test, dataset)]
    return Dataset(name=dataset, train=train, test=test, directory=directory, source=source,
                   sha256={k: v for s in sums for k, v in s["sha256"].items()},
                   content_sha256={k: v for s in sums for k, v in s["content_sha256"].items()})


def _refuse_other_dataset(path: Path, payload: bytes, dataset: str, fix: str = "") -> None:
    """MNIST and Fashion-MNIST files have the same names and format: a --data-dir pointing at the wrong one
    would train quietly on the wrong images. The official .gz checksums tell them apart, and for copies that are
    uncompressed or recompressed, the checksums of the uncompressed labels."""
    md5 = hashlib.md5(payload).hexdigest()
    labels = None
    if "labels" in path.name:
        try:
            labels = hashlib.sha256(gzip.decompress(payload) if path.name.endswith(".gz") else payload).hexdigest()
        except (OSError, EOFError, zlib.error):
            labels = None  # a damaged file: reading it reports that
    for other, sums in OFFICIAL_MD5.items():
        if other != dataset and (md5 in sums.values() or labels in LABEL_SHA256[other]):
            fix = fix or f"choose --dataset {other} or another --data-dir"
            raise TinyMnistError(f"{path}: this is {other}'s file, not {dataset}'s ({fix})")


def normalize(images: torch.Tensor, dataset: str = "mnist") -> torch.Tensor:
    """uint8 [N, 28, 28] -> float32 [N, 1, 28, 28], scaled to [0, 1] then standardised."""
    mean, std = NORMALIZATION[dataset]
    # In place on the one float copy: the whole training set is 188 MB as float32, and each extra temporary
    # would cost as much memory and a pass over it.
    return images.float().sub_(255.0 * mean).div_(255.0 * std).unsqueeze(1)


def split_validation(split: Split, n_val: int, seed: int = 0) -> tuple[Split, Split]:
    """Carve a fixed validation set out of the training split (a fixed permutation, independent of the run seed,
    so every run and every tuning trial sees the same validation images)."""
    if not 0 <= n_val < len(split):
        raise TinyMnistError(f"--val-split {n_val}: must be between 0 and {len(split) - 1}")
    perm = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = perm[:n_val].sort().values, perm[n_val:].sort().values
    return (
        Split(split.images[train_idx], split.labels[train_idx]),
        Split(split.images[val_idx], split.labels[val_idx]),
    )


def check(dataset: str = "mnist", data_dir: str | Path | None = None) -> list[dict]:
    """Validate every file and compare it with the official release checksum. Returns one row per file."""
    directory, source = locate(dataset, data_dir, allow_download=False)
    rows = []
    for split, (image_stem, label_stem) in SPLIT_FILES.items():
        read_split(directory, split)  # raises on any structural problem
        for stem in (image_stem, label_stem):
            p = _find_file(directory, stem)
            payload = p.read_bytes()
            md5 = hashlib.md5(payload).hexdigest()
            _refuse_other_dataset(p, payload, dataset)
            official = OFFICIAL_MD5[dataset].get(stem + ".gz")
            if p.suffix == ".gz":
                matches = md5 == official
            else:
                matches = None  # official checksums are published for the .gz files only
            rows.append({
                "file": str(p), "bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest(),
                "official": matches, "source": source,
            })
    return rows
