"""The body of every entry script of ``src/``, one module each (``src/index.py`` -> ``siamese.commands.index``,
``src/train.py`` -> ``siamese.commands.train``, and so on): read the composed config, validate each
argument once, call the package, print."""
