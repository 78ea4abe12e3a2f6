"""A small digits CNN (8x8 grayscale, 10 classes)."""
import torch
from torch import nn


class SmallCNN(nn.Module):
    input_names, output_names = ["x"], ["logits"]

    def __init__(self):
        super().__init__()
        def cbr(cin, cout, s):
            return [nn.Conv2d(cin, cout, 3, s, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
        self.features = nn.Sequential(*cbr(1, 8, 1), *cbr(8, 12, 2), *cbr(12, 16, 1))
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))

    def example_inputs(self):
        return (torch.zeros(1, 1, 8, 8),)


def make_model():
    return SmallCNN()
