"""The paper's colorization Turing test (section 3.1) as a local study: ``python -m colorization.study make|serve|report``.

make: the real and recolorized 256 x 256 photos and the pairs (``make``); serve: the page participants open, answers
in SQLite (``server``, ``db``); report: fooling rates with bootstrap intervals over participants (``report``).
"""
