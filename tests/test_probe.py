import torch

from autoencoders.probe import linear_probe_accuracy


def blobs(n: int, seed: int):
    """Three well-separated Gaussian classes in 20 dimensions."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    centres = torch.eye(3, 20) * 6
    return centres[labels] + torch.randn(n, 20, generator=generator), labels


def test_the_probe_separates_separable_classes_and_not_random_labels():
    (train_x, train_y), (test_x, test_y) = blobs(600, 0), blobs(300, 1)
    assert linear_probe_accuracy(train_x.clone(), train_y, test_x.clone(), test_y) > 0.95
    shuffled = train_y[torch.randperm(600, generator=torch.Generator().manual_seed(2))]
    assert linear_probe_accuracy(train_x, shuffled, test_x, test_y) < 0.6  # chance: 1/3
    assert torch.allclose(train_x.mean(0), torch.zeros(20), atol=1e-5)  # standardised in place


def test_the_probe_is_deterministic_and_works_under_inference_mode():
    (train_x, train_y), (test_x, test_y) = blobs(300, 0), blobs(300, 1)
    first = linear_probe_accuracy(train_x.clone(), train_y, test_x.clone(), test_y)
    features = train_x.clone(), test_x.clone()  # made outside inference mode, as the codes are
    with torch.inference_mode():  # as in Lightning's test loop
        again = linear_probe_accuracy(features[0], train_y, features[1], test_y)
    assert first == again
