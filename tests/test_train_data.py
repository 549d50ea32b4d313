"""swav-train's data: multi-crop augmentation, the digits split, ImageFolder input."""
import pytest
import torch

pytest.importorskip("torchvision", reason="swav-train needs torchvision (pip install '.[train]')")
pytest.importorskip("sklearn", reason="the digits data set ships with scikit-learn (pip install '.[train]')")

from swav_kernels.train import data  # noqa: E402


def test_blur_kernel_is_the_papers_23_or_what_a_small_crop_can_pad():
    assert [data.blur_kernel_size(s) for s in (224, 96, 24, 16, 8, 3, 1)] == [23, 23, 23, 15, 7, 1, 1]


def test_multi_crop_gives_each_resolution_its_count_and_size():
    multi_crop = data.MultiCrop([12, 6], [2, 3], [0.3, 0.1], [1.0, 0.3])
    image = torch.rand(3, 20, 20)
    crops = multi_crop(image)
    assert [tuple(c.shape) for c in crops] == [(3, 12, 12)] * 2 + [(3, 6, 6)] * 3
    assert all(c.dtype == torch.float32 for c in crops)
    assert not torch.equal(crops[0], crops[1])  # independent random views


def test_multi_crop_is_reproducible_from_torch_seed():
    multi_crop = data.MultiCrop([8], [3], [0.2], [1.0])
    image = torch.rand(3, 16, 16)
    torch.manual_seed(4)
    first = multi_crop(image)
    torch.manual_seed(4)
    second = multi_crop(image)
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_multi_crop_normalises_like_imagenet():
    """With no randomness that changes a grey image (full-image crop, no jitter or blur), a constant grey image maps to (v - mean) / std."""
    transform = data.crop_transform(8, 1.0, 1.0, jitter_strength=0.0, blur_prob=0.0)
    out = transform(torch.full((3, 8, 8), 0.5))
    expected = torch.tensor([(0.5 - m) / s for m, s in zip(data.MEAN, data.STD)]).view(3, 1, 1).expand(3, 8, 8)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-3)  # grayscale weights sum to 0.9999


def test_multi_crop_rejects_mismatched_lists():
    with pytest.raises(ValueError, match="one entry per resolution"):
        data.MultiCrop([12, 6], [2], [0.3], [1.0])


def test_digits_split_is_fixed_stratified_and_upsampled():
    train_x, train_y = data.digits(16, "train")
    test_x, test_y = data.digits(16, "test")
    assert train_x.shape == (1347, 3, 16, 16) and test_x.shape == (450, 3, 16, 16)
    assert float(train_x.min()) >= 0 and float(train_x.max()) <= 1
    assert torch.equal(train_x[:, 0], train_x[:, 2])  # grey in three channels
    assert torch.bincount(test_y).tolist() == pytest.approx([45] * 10, abs=2)
    again_x, again_y = data.digits(16, "train")
    assert torch.equal(again_x, train_x) and torch.equal(again_y, train_y)
    with pytest.raises(ValueError, match="split"):
        data.digits(16, "validation")


def test_image_folder_sources(tmp_path):
    from PIL import Image

    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for index in range(6):
            Image.new("RGB", (20, 18), color=(40 * index, 100, 200 if label == "a" else 0)).save(
                tmp_path / label / f"{index}.png"
            )
    multi_crop = data.MultiCrop([10, 5], [2, 1], [0.5, 0.2], [1.0, 0.5])
    dataset = data.pretrain_dataset(str(tmp_path), multi_crop, digits_size=16, size_dataset=5)
    assert len(dataset) == 5
    crops, label = dataset[0]
    assert [tuple(c.shape) for c in crops] == [(3, 10, 10), (3, 10, 10), (3, 5, 5)] and label == 0
    train, test = data.eval_datasets(str(tmp_path), 10, 16, max_images=8, seed=0)
    assert (len(train), len(test)) == (6, 2)
    image, label = train[0]
    assert image.shape == (3, 10, 10) and label in (0, 1)
