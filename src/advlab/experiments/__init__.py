"""Reproduced documents, one package each.

* ``momentum``: Dong et al., CVPR 2018 (momentum attacks) on an MNIST zoo or timm models;
* ``vonenet``: the VOneNet-FGSM student report on MNIST, then a sound evaluation.

Each has a frozen config with profiles and a ``run_*`` function that returns data and writes
its report; ``advlab reproduce NAME`` is their command line.
"""
