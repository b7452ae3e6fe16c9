"""Your own CNN, trained in the frequency domain: a complete example.

The network is PyTorch's CIFAR-10 tutorial CNN with "same" padding (the
tutorial's unpadded 5x5 convs have no exact frequency-domain twin, and
``cemnet.from_cnn`` says so). Run it as a script to convert it and train
both twins for a few steps on random images:

    python examples/own_cnn.py

or hand it to the command line, which converts it unless told ``--as-cnn``:

    cemnet train --model examples/own_cnn.py:tutorial_net --dataset cifar10 --epochs 1 --limit-train 2000
    cemnet train --model examples/own_cnn.py:tutorial_net --as-cnn --dataset cifar10 --epochs 1 --limit-train 2000
"""

import torch
import torch.nn.functional as F
from torch import nn


class TutorialNet(nn.Module):
    """Two 5x5 conv layers with ReLU and 2x2 max pooling, then three dense layers."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5, padding=2)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5, padding=2)
        self.fc1 = nn.Linear(16 * 8 * 8, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def tutorial_net() -> nn.Module:
    """The function ``cemnet train --model examples/own_cnn.py:tutorial_net`` calls."""
    return TutorialNet()


if __name__ == "__main__":
    import cemnet

    torch.manual_seed(0)
    cnn = tutorial_net()
    twin = cemnet.from_cnn(cnn, half_spectrum=True)  # any preset option: weight_fixation, nonlinearity, ...
    print(twin)
    images, labels = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
    for name, model in (("CNN", cnn), ("CEMNet twin", twin)):
        optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-3)
        losses = []
        for _ in range(5):  # a plain PyTorch loop: the twin keeps its Weight Fixation by itself
            optimizer.zero_grad()
            loss = F.cross_entropy(model(images), labels)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        print(f"{name}: {cemnet.count_parameters(model):,} parameters, loss {losses[0]:.3f} -> {losses[-1]:.3f}")
