"""The bodies of the use commands, one module each (``src/index.py`` -> ``siamese.commands.index``,
and so on): read the composed config, validate each argument once, call the package, print.
``src/train.py`` and ``src/eval.py`` run ``siamese.training.run`` and ``siamese.commands.eval``."""
