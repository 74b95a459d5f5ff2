"""Lockstep comparison of the paper presets against the projUNN authors' code, step by step, in float64.

    python -m scripts.lockstep --authors PATH                       # every task, 10 steps each
    python -m scripts.lockstep --authors PATH --tasks pmnist_d copy --steps 20 --json lockstep.json
    python -m scripts.lockstep --authors PATH --tasks cifar_resnet9 --stream authors --dtype float32 \
        --steps 195 --batch 256 --data-root DIR                    # one epoch on their script's batches

``PATH`` is a git checkout (or bare clone) of github.com/facebookresearch/projUNN, any commit:
``git clone https://github.com/facebookresearch/projUNN``. Nothing of it is copied into this
project: the script extracts the two commits that docs/reproduction.md pins, with
``git -C PATH archive``, into a temporary directory, and imports their ``projunn`` package there
under other names (ours stays ``projunn``):

* 437eb05, ``permuted_mnist.py``, ``convolutional_experiment.py`` and their ``projunn/`` (pMNIST, CIFAR10);
* 5285b00, ``copy_task.py``, ``adding_task.py`` and their ``projunn/`` (copy, adding).

Their scripts parse ``sys.argv``, seed, and (CIFAR10) load the dataset when imported, so they
are not imported: the definitions the experiment needs (``projector``, ``proj_net``) are read
from each file and executed with their ``projunn`` and an ``args`` of the preset's settings.

What runs, per task. The authors' model (their classes, their initialisation) and their
``RMSprop`` with their projector closure, and the preset's model and optimizer, composed by Hydra
from ``conf/`` with ``experiment=<preset>`` and built by ``hydra.utils.instantiate`` as
``train.py`` builds them. Both are built in float64 (their complex frequency matrices, which their
layer makes ``complex64``, are cast to ``complex128``); the authors' initial weights are copied
into ours; both get the same batches; both rank-k samplers are replaced by one deterministic
sampler (``--sampler``): ``topk``, the exact top-k right singular vectors ``v`` of the update
``G`` (``a = G v``, ``b = v``, a full SVD), or ``sketch``, the LSI sketch with one fixed real
Gaussian ``R`` shared by every matrix of a shape (``v`` spans ``Gᴴ R``; continuous in ``G``, cheap,
and it keeps the conjugate pairs of the CIFAR frequencies paired). The default is ``topk`` for
the recurrent tasks and ``sketch`` for CIFAR10, where an SVD of every frequency's matrix costs far
more than the step. No random draw is left, so any difference is arithmetic or code.

Tasks (``--tasks``): ``pmnist_d`` (``experiment=pmnist``, their ``permuted_mnist.py --permute``),
``pmnist_t`` (``experiment=pmnist optim=projunn_t``, ``--projector projUNNT``), ``copy``
(``experiment=copy_T1000``), ``adding`` (``experiment=adding_T200``), ``cifar_t`` and ``cifar_d``
(``experiment=cifar10_projunn_t`` / ``_d`` with ``optim.base=AuthorsRMSprop``, their
``convolutional_experiment.py --dataset CIFAR10 --unitary``), ``cifar_resnet9``
(``experiment=cifar10_resnet9``, their script without ``--unitary``: ``nn.Conv2d`` layers, their
RMSprop on real parameters, no variants). Sizes: the preset's hidden sizes and
learning rates; batch ``--batch`` (default 16; 8 for CIFAR10), sequence lengths ``--seq-len``
(pMNIST, default 784), ``--copy-T`` (default 1000), ``--adding-T`` (default 200); CIFAR10 on
Gaussian images of side ``--image-size`` (default 16, every kernel half as wide as on CIFAR10's
32 × 32: the same code paths, a quarter of the work and memory; each float64 model takes ~2 GB
at 32) with random labels; pMNIST on the first MNIST training images when ``--data-root``
holds them (else uniform pixels on 20 % of the positions, said in the output). The learning-rate
schedules are left out: none of them changes a rate within the first few hundred steps.

Real CIFAR10 batches (``--stream``, ``streams.py``; ``--data-root`` holding ``cifar-10-batches-py``):
``preset``, the batches ``python train.py <preset> seed=S`` trains on, or ``authors``, the batches
their ``convolutional_experiment.py`` draws at that seed (``cifar_resnet9`` only: with ``--unitary``
their stream depends on their projector's draws). Both sides step on the one stream, so each code
runs on the other's data; after the last step both are evaluated on all 10,000 test images, with
their test accuracies. ``--dtype float32`` builds both sides in float32 (their script's and
train.py's precision; their initial weights are then their script's at that seed), so that
``--stream authors --dtype float32 --steps 195 --batch 256`` is one epoch of their script's run
and of the preset on its batches, side by side.

The authors' side runs in variants, each its own import of their package, changed at run time
(never a file): ``written`` (their code as it is: their ``dim2_eig`` casts to the module global
``default_complex_dtype = complex64``, so their 2 × 2 eigen-solve is float32-accurate); ``c128``
(that global set to ``complex128``); ``c128-nostab`` (and projUNN-D's ``stable_adder`` 1e-8 set
to 0); ``matched`` (every documented difference removed as well: their modReLU without its
``1e-6``; on our side the CIFAR10 channel growth without our 1/sqrt(copies) scaling); on CIFAR10
only ``written``, ``matched`` and ``matched-eps0`` (RMSprop's ``eps`` set to 0 on both sides as well:
our free edge-column bins take the sum of the two conjugate bins' gradients, ``2g``, so their step
``2g / (sqrt(4v) + eps)`` is theirs with ``eps/2``), each of their steps there taking seconds; and ``lsi``, their code
with their own random LSI sketch, whose weights are not compared (other draws) but measured: how
far they leave the Hermitian symmetry of a real convolution, and the isometry defect
``|‖conv(x)‖/‖x‖ − 1|`` of one of their layers. The chaos control: after step 0 the closest variant
``written`` (``matched`` on CIFAR10, where it is the one that still differs) is copied and moved
by its own step-0 difference from ours, parameter by parameter (the unitary matrices by
an exact unitary step that keeps the conjugate pairs paired); it then runs beside, and the growth
of its distance to the original is set against the growth of ours.

Output, per task and step: the loss of each side on the step's batch before the update, their
difference, the largest difference of the outputs (logits), the largest weight difference after
the update over all weights and over the unitary matrices alone, both sides' unitarity error
``max ‖WᴴW − I‖_F``, then the largest weight difference (all / unitary) of ours against each other
variant, and of the chaos control against its original. Then their own numerical error (their
code against itself: float32 against complex128 eigen-solve, with against without the
stabiliser) and how much their LSI's ``eps`` would have shrunk the steps the deterministic sampler
replaced. For CIFAR10 the weights are compared on the authors' layout (a matrix per ``rfft2``
bin), and the table adds our preset's default RMSprop against ``AuthorsRMSprop``, the authors'
departure from the Hermitian symmetry of a real convolution (largest ``‖K − K_sym‖_F`` over the
bins, ``K_sym`` the matrices our layout would hold) for ``written`` and ``lsi``, and the
isometry defects. After the last step both sides are evaluated in eval mode (BatchNorm's running
statistics) on the first batch. A verdict line closes each task. ``--json OUT`` writes every number.

Without a usable ``--authors`` the script exits with status 2 and one line saying what it needs.

Files: ``specs.py`` (each task's description, the variants, the settings, the batches),
``samplers.py``, ``streams.py`` (CIFAR10's real batches), ``sides.py`` (building both sides from
one set of weights; the chaos control's perturbation), ``layout.py`` (CIFAR10's two frequency
layouts, through the library's ``projunn.conv.kernel_from_matrices`` / ``matrices_from_kernel``),
``run.py`` (a task's rows, computed), ``table.py`` (printed), ``__main__.py`` (the command line);
``scripts/authors.py`` holds the authors' checkout helpers it shares with ``side_by_side``.
"""
