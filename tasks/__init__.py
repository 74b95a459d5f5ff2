"""The paper's tasks: a Lightning data module for each (copy memory, adding, permuted/sequential
MNIST, CIFAR10), with its objective and metrics (``lipschitz``: the certified accuracy of a
1-Lipschitz classifier, the MNIST task's metric), and the models they train (``sequence_models``,
``vision_models``). The run machinery that trains any of them is ``training``; ``train.py`` wires
both from ``conf/``. Nothing in ``projunn/`` depends on this package."""
