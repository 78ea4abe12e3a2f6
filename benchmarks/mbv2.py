"""The MobileNetV2-style CNN at 96 px that benchmarks/serve.py builds and serves (random weights)."""
import torch
from torch import nn


def block(cin, cout, stride, expand=6):
    mid = cin * expand
    return nn.Sequential(nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU6(),
                         nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid), nn.ReLU6(),
                         nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))


class Residual(nn.Module):
    def __init__(self, body):
        super().__init__()
        self.body = body

    def forward(self, x):
        return x + self.body(x)


class MobileNetV2(nn.Module):
    """MobileNetV2-style: a stride-2 stem, inverted residuals with depthwise 3x3, 96 px RGB, 10 classes."""

    def __init__(self):
        super().__init__()
        layers = [nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6()]
        cin = 32
        for cout, repeat, stride in ((16, 1, 1), (24, 2, 2), (32, 3, 2), (64, 3, 2), (96, 2, 1), (160, 2, 2)):
            for r in range(repeat):
                b = block(cin, cout, stride if r == 0 else 1, 1 if cout == 16 else 6)
                layers.append(Residual(b) if cin == cout and r > 0 else b)
                cin = cout
        layers += [nn.Conv2d(cin, 640, 1, bias=False), nn.BatchNorm2d(640), nn.ReLU6(),
                   nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(640, 10)]
        self.net = nn.Sequential(*layers)

    def forward(self, image):
        return self.net(image)

    def example_inputs(self):
        return (torch.zeros(1, 3, 96, 96),)


def make_mbv2():
    torch.manual_seed(0)
    return MobileNetV2().eval()
